"""Read label maps as class indices (palette PNGs keep their indices; never converted to grey)."""
import numpy as np
from PIL import Image

_INDEX_MODES = ("P", "L", "I", "I;16")


def read_label_map(path: str) -> np.ndarray:
    """Return the (H, W) class-index array stored in ``path`` (uint8 for 8-bit PNGs, else int64).

    Palette ('P') PNGs such as VOC's SegmentationClass store indices, which are returned as is;
    Detectron2's ``read_image(format="L")`` would turn them into grey levels instead.
    """
    with Image.open(path) as image:
        if image.mode not in _INDEX_MODES:
            raise ValueError(
                f"Label map '{path}' has image mode '{image.mode}'; expected a single-channel "
                f"index PNG (one of {_INDEX_MODES}). Colour-coded labels must be converted to "
                "class indices first (see the tools/prepare_*.py scripts)."
            )
        labels = np.array(image)
    return labels if labels.dtype == np.uint8 else labels.astype(np.int64)


def stock_reader_problem(path: str):
    """Why readers that convert to grey (Detectron2's ``read_image(path, "L")``) would not get the
    class indices stored in ``path``, or None when they would (a single-channel 8-bit PNG)."""
    with Image.open(path) as image:
        mode = image.mode
    if mode == "L":
        return None
    if mode == "P":
        return (
            "is a palette PNG: its pixels are class indices, but Detectron2's DatasetMapper "
            "(read_image(path, 'L')) reads the palette colours' grey levels instead"
        )
    return f"has image mode '{mode}'; expected a single-channel 8-bit class-index PNG"
