"""COCO-Stuff 171 labels (0..170, 255 = unlabeled) for ``coco_stuff164k``.

Source: the COCO-Stuff164k stuffthingmaps ``annotations/<split>/<id>.png`` (pixel value = COCO-Stuff
id - 1, 0..181; 255 = unlabeled). Eleven of the 182 ids are never used (the ten thing ids without
annotations and id 91); the other 171 keep their order and become 0..170. This is the 171-class
encoding of MMSegmentation's ``COCOStuffDataset`` (its ``coco_stuff164k.py`` converter) and of
MaskFormer's ``prepare_coco_stuff_sem_seg.py``, so the class order is COCO's 80 things followed by
the 91 stuff classes, each by ascending id.

Output: ``annotations/<split>/<id>_labelTrainIds.png`` (MMSegmentation's name), next to the source.
"""

import os

from .coco_object import (
    STUFF_VALUES,
    UNLABELED_VALUE,
    UNUSED_THING_VALUES,
    stuffthingmap_pairs,
)
from .label_mapping import IGNORE_LABEL, LabelMapping, convert_label_pngs

OUTPUT_SUFFIX = "_labelTrainIds.png"
# Raw value 90 (COCO-Stuff id 91) is unused too: things end at 89, stuff starts at 91.
UNUSED_VALUES = UNUSED_THING_VALUES + (90,)


def coco_stuff171_mapping():
    """Raw stuffthingmap value -> COCO-Stuff 171 label; unlabeled stays 255, the eleven unused
    values and 182..254 are unknown."""
    used = [value for value in range(max(STUFF_VALUES) + 1) if value not in UNUSED_VALUES]
    label_of_value = {value: label for label, value in enumerate(used)}
    label_of_value[UNLABELED_VALUE] = IGNORE_LABEL
    return LabelMapping.from_dict(label_of_value)


def prepare_coco_stuff171(coco_stuff_root, split, workers=1):
    """Convert ``annotations/<split>/*.png`` to ``*_labelTrainIds.png``; returns a ``WriteSummary``."""
    pairs = stuffthingmap_pairs(os.path.join(coco_stuff_root, "annotations", split), OUTPUT_SUFFIX)
    return convert_label_pngs(
        pairs, coco_stuff171_mapping(), workers=workers, desc=f"COCO-Stuff 171 {split}"
    )
