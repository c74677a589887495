"""Reading images: dataset images whose damage names the file and its dataset, and user images (paths,
PIL images, arrays) decoded to RGB."""
import os
import struct

import numpy as np
from PIL import Image

# EXIF orientations that swap height and width (transpose, rotations by 90 and 270 degrees).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112
# What PIL raises for missing, truncated or damaged files (SyntaxError and struct.error for some
# broken headers).
DAMAGE_ERRORS = (OSError, SyntaxError, EOFError, struct.error)
INPUT_FORMATS = ("BGR", "RGB")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UnreadableImageError(OSError):
    """A dataset image that cannot be decoded (truncated, damaged, missing or not an image)."""


def describe_image(record):
    """``'<file_name>' of dataset '<name>'`` (the dataset part only when the record has one)."""
    dataset = (record.get("meta") or {}).get("dataset_name")
    return f"'{record['file_name']}'" + (f" of dataset '{dataset}'" if dataset else "")


def _unreadable(record, error):
    return UnreadableImageError(
        f"Cannot read image {describe_image(record)}: {type(error).__name__}: {error}. The file is "
        "missing, truncated or damaged; download or extract it again (or replace it), then re-run."
    )


def read_image_checked(record, format=None):
    """Detectron2's ``read_image(record["file_name"], format)``, whose errors name the image, its
    dataset (``record["meta"]["dataset_name"]``) and what to do.

    Returns:
        np.ndarray: (H, W, C) uint8 image in ``format``, EXIF orientation applied.
    Raises:
        UnreadableImageError: the file is missing, truncated or not an image.
    """
    from detectron2.data.detection_utils import read_image

    try:
        return read_image(record["file_name"], format=format)
    except DAMAGE_ERRORS as error:
        raise _unreadable(record, error) from error


def oriented_image_size(record):
    """(H, W) of ``record``'s image as :func:`read_image_checked` returns it (EXIF orientation
    applied), read from the file header without decoding the pixels."""
    try:
        with Image.open(record["file_name"]) as image:
            height, width = image.height, image.width
            try:
                orientation = image.getexif().get(_EXIF_ORIENTATION)
            except Exception:  # a malformed EXIF block is ignored, as read_image ignores it
                orientation = None
    except DAMAGE_ERRORS as error:
        raise _unreadable(record, error) from error
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def pil_to_rgb(image) -> np.ndarray:
    """A PIL image -> (H, W, 3) uint8 RGB. 16-bit greyscale is scaled to 8 bits (PIL's own conversion
    clips every value above 255 to white)."""
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise ValueError("floating-point pixels (PIL mode 'F') are not supported; save the image with 8 or 16 bits")
    return np.asarray(image.convert("RGB"))


def read_image_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file, EXIF orientation applied (16-bit greyscale scaled to
    8 bits). Raises ``OSError`` naming the file when it cannot be read."""
    from PIL import ImageOps

    try:
        with Image.open(path) as image:
            return pil_to_rgb(ImageOps.exif_transpose(image))
    except DAMAGE_ERRORS + (ValueError,) as error:  # ValueError: pixels pil_to_rgb refuses
        raise OSError(f"Cannot read image {path!r}: {error}") from error


def image_to_rgb(image, input_format: str = "BGR") -> np.ndarray:
    """A path, a PIL image or an (H, W[, 3|4]) uint8/uint16 array in ``input_format`` -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_image_rgb(os.fspath(image))
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Expected an image path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = np.clip(np.rint(image / 257.0), 0, 255).astype(np.uint8)
    if image.dtype != np.uint8:
        raise TypeError(f"Image arrays must be uint8 (or uint16), got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"Image arrays must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1] if input_format == "BGR" else image)
