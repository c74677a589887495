"""Cityscapes 19-class train ids (``*_gtFine_labelTrainIds.png``) from the ``*_gtFine_labelIds.png``.

Detectron2's ``cityscapes_fine_sem_seg_*`` and MMSegmentation's ``CityscapesDataset`` read
``<city>/<name>_gtFine_labelTrainIds.png`` next to the downloaded ``_gtFine_labelIds.png``. The
official way to write them is cityscapesscripts' ``createTrainIdLabelImgs`` (it rasterises the
polygons of ``*_gtFine_polygons.json`` with the train ids). It draws the same polygons in the same
order as the ``labelIds`` PNGs were drawn, so mapping each label id to its train id gives the same
image; this step does that without the cityscapesscripts dependency.
"""

import os

from ...utils.files import require_path
from .label_mapping import IGNORE_LABEL, LabelMapping, convert_label_pngs, png_pairs

LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
# Cityscapes label ids 0..33 (cityscapesscripts' labels.py); these 19 are evaluated, in train-id
# order road, sidewalk, building, wall, fence, pole, traffic light, traffic sign, vegetation,
# terrain, sky, person, rider, car, truck, bus, train, motorcycle, bicycle. Every other id -> 255.
EVALUATED_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
NUM_LABEL_IDS = 34

CITYSCAPES_HINT = (
    "Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ and unzip both into cityscapes/."
)


def train_id_mapping():
    """Cityscapes label id (0..33) -> train id (0..18, 255 = not evaluated)."""
    label_of_value = {label_id: IGNORE_LABEL for label_id in range(NUM_LABEL_IDS)}
    label_of_value.update({label_id: i for i, label_id in enumerate(EVALUATED_LABEL_IDS)})
    return LabelMapping.from_dict(label_of_value)


def gt_fine_splits(cityscapes_root):
    """Sorted split folders of ``gtFine/`` (what createTrainIdLabelImgs converts)."""
    gt_root = require_path(
        os.path.join(cityscapes_root, "gtFine"), "Cityscapes gtFine folder", CITYSCAPES_HINT
    )
    return sorted(
        name for name in os.listdir(gt_root) if os.path.isdir(os.path.join(gt_root, name))
    )


def write_train_id_pngs(cityscapes_root, split, workers=1):
    """Write ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` for every ``_labelIds.png``.

    Returns:
        WriteSummary
    """
    gt_dir = require_path(
        os.path.join(cityscapes_root, "gtFine", split), "Cityscapes gtFine folder", CITYSCAPES_HINT
    )
    pairs = []
    for city in sorted(os.listdir(gt_dir)):
        city_dir = os.path.join(gt_dir, city)
        if os.path.isdir(city_dir):
            pairs += png_pairs(city_dir, city_dir, TRAIN_IDS_SUFFIX, source_suffix=LABEL_IDS_SUFFIX)
    if not pairs:
        raise FileNotFoundError(f"No <city>/*{LABEL_IDS_SUFFIX} in {gt_dir}.\n{CITYSCAPES_HINT}")
    return convert_label_pngs(
        pairs, train_id_mapping(), workers=workers, desc=f"Cityscapes {split}"
    )
