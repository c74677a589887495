"""ADE20K (SceneParsing, 150 classes) labels as Detectron2's ``ade20k_sem_seg_*`` read them.

``ADEChallengeData2016/annotations/<split>/<id>.png`` stores 0 = "other" (not evaluated) and the
classes as 1..150. Detectron2's ``datasets/prepare_ade20k_sem_seg.py`` writes
``annotations_detectron2/<split>/<id>.png`` with the classes as 0..149 and 255 for "other" (the same
labels MMSegmentation gets with ``reduce_zero_label``); this step writes the same files, resumable
and with a check that every value lies in 0..150.
"""

import os

from ...utils.files import require_path
from .label_mapping import convert_label_pngs, png_pairs, shift_down_mapping

NUM_CLASSES = 150
SPLITS = ("training", "validation")

ADE20K_HINT = (
    "Download ADEChallengeData2016.zip from "
    "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip and unzip it into "
    "the datasets root."
)


def write_detectron2_pngs(ade_root, split, workers=1):
    """``annotations/<split>/*.png`` -> ``annotations_detectron2/<split>/*.png``.

    Returns:
        WriteSummary
    """
    source_dir = require_path(
        os.path.join(ade_root, "annotations", split), "ADE20K annotations folder", ADE20K_HINT
    )
    pairs = png_pairs(source_dir, os.path.join(ade_root, "annotations_detectron2", split))
    if not pairs:
        raise FileNotFoundError(f"No <id>.png label maps in {source_dir}.\n{ADE20K_HINT}")
    mapping = shift_down_mapping(NUM_CLASSES, keep_ignore=False)  # raw ADE never uses 255
    return convert_label_pngs(pairs, mapping, workers=workers, desc=f"ADE20K {split}")
