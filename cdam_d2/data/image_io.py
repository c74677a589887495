"""Reading dataset images so that a damaged or missing file names itself and its dataset."""
import struct

from PIL import Image

# EXIF orientations that swap height and width (transpose, rotations by 90 and 270 degrees).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112
# What PIL raises for missing, truncated or damaged files (SyntaxError and struct.error for some
# broken headers).
DAMAGE_ERRORS = (OSError, SyntaxError, EOFError, struct.error)


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
