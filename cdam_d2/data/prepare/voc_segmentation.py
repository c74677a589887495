"""PASCAL VOC 2012 label maps that every reader sees as class indices.

VOC's ``SegmentationClass/<id>.png`` are palette ('P') PNGs: the pixel values are class indices
(0..20, 255 = void) but readers that convert to grey, such as Detectron2's stock
``DatasetMapper`` (``read_image(path, "L")``), get the palette colours' luminance instead
(1 -> 38, 255 -> 220). This step writes

- ``SegmentationClassRaw/<id>.png``: the same indices as single-channel PNGs (the name DeepLab's
  ``remove_gt_colormap.py`` uses for this conversion), read by ``cdam_voc21_sem_seg_val``;
- ``SegmentationClassVOC20/<id>.png``: VOC20 labels derived from them (the 20 object classes as
  0..19, background and void 255: MMSegmentation's ``reduce_zero_label``, as the training-free
  peers' ``PascalVOC20Dataset``), read by ``cdam_voc20_sem_seg_val``;

and checks SBD's ``SegmentationClassAug`` (already single-channel in the usual downloads): any
palette PNG found there is rewritten in place as an index PNG with the same indices.
"""

import os

from PIL import Image

from ..datasets.builtin_meta import VOC_FOREGROUND
from ..label_io import read_label_map
from ...utils.files import require_path, save_label_png
from .label_mapping import (
    IGNORE_LABEL,
    LabelMapping,
    convert_label_pngs,
    png_pairs,
    shift_down_mapping,
)
from .parallel import parallel_map
from .voc_labels import VOC2012_HINT

PALETTE_DIR = "SegmentationClass"
INDEX_DIR = "SegmentationClassRaw"
VOC20_DIR = "SegmentationClassVOC20"
AUG_DIR = "SegmentationClassAug"


def voc21_mapping():
    """Identity on the VOC21 values (0..20 and void 255); anything else is reported."""
    values = list(range(len(VOC_FOREGROUND) + 1)) + [IGNORE_LABEL]
    return LabelMapping.from_dict({value: value for value in values})


def write_voc21_index_pngs(voc_root, workers=1):
    """``SegmentationClass/*.png`` (palette) -> ``SegmentationClassRaw/*.png`` (indices).

    Returns:
        WriteSummary
    """
    source_dir = require_path(
        os.path.join(voc_root, PALETTE_DIR), "VOC 2012 SegmentationClass folder", VOC2012_HINT
    )
    pairs = png_pairs(source_dir, os.path.join(voc_root, INDEX_DIR))
    if not pairs:
        raise FileNotFoundError(f"No <id>.png label maps in {source_dir}.\n{VOC2012_HINT}")
    return convert_label_pngs(pairs, voc21_mapping(), workers=workers, desc="VOC21 index PNGs")


def write_voc20_pngs(voc_root, workers=1):
    """``SegmentationClassRaw/*.png`` (VOC21) -> ``SegmentationClassVOC20/*.png``.

    Returns:
        WriteSummary
    """
    source_dir = require_path(
        os.path.join(voc_root, INDEX_DIR),
        "VOC21 index PNGs",
        "Convert VOC's palette PNGs first (write_voc21_index_pngs / tools/prepare_voc.py).",
    )
    pairs = png_pairs(source_dir, os.path.join(voc_root, VOC20_DIR))
    mapping = shift_down_mapping(len(VOC_FOREGROUND))
    return convert_label_pngs(pairs, mapping, workers=workers, desc="VOC20")


def _image_mode(path):
    with Image.open(path) as image:
        return image.mode


def _rewrite_as_index_png(path):
    save_label_png(read_label_map(path), path)


def repair_palette_pngs(label_dir, workers=1):
    """Rewrite every palette PNG of ``label_dir`` in place as an index PNG (same indices).

    Returns:
        tuple[int, int]: (rewritten, already single-channel). Raises ``ValueError`` naming a file
        that is neither (e.g. RGB colour-coded labels).
    """
    paths = [path for _, path in png_pairs(label_dir, label_dir)]
    modes = parallel_map(_image_mode, paths, workers=workers, desc=f"checking {label_dir}")
    not_index = [(p, m) for p, m in zip(paths, modes) if m not in ("P", "L")]
    if not_index:
        path, mode = not_index[0]
        raise ValueError(
            f"{path} has image mode '{mode}' ({len(not_index)} such files in {label_dir}); "
            "expected single-channel class-index PNGs."
        )
    palette = [path for path, mode in zip(paths, modes) if mode == "P"]
    parallel_map(_rewrite_as_index_png, palette, workers=workers, desc="palette -> index")
    return len(palette), len(paths) - len(palette)
