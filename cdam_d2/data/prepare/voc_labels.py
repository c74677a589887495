"""PASCAL VOC 2012 image-level labels, made as the released ``cls_labels.npy`` was.

Labels are segmentation ids 1..20 in the alphabetical VOC order. The faithful source is the XML
``Annotations``: every ``<name>`` tag whose text is a class name counts, difficult and truncated
objects included; part names (head, hand, ...) are not class names and drop out. The fallback reads
the ``SegmentationClassAug`` masks (values other than 0 and 255); it gives nearly, not exactly, the
same labels.
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

from ..datasets.builtin_meta import VOC_FOREGROUND
from ..label_io import read_label_map
from ...utils.files import read_id_list, require_path
from .parallel import parallel_map

VOC_LABEL_OF_NAME = {name: label for label, name in enumerate(VOC_FOREGROUND, start=1)}
IGNORE_VALUE = 255

VOC2012_HINT = (
    "Download VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ "
    "and extract it so that VOCdevkit/VOC2012/ exists."
)
TRAIN_AUG_HINT = (
    "Download the SBD augmentation of VOC 2012 as used by DeepLab/mmseg (train_aug.txt with "
    "10,582 ids and SegmentationClassAug.zip) and put them into "
    "VOCdevkit/VOC2012/ImageSets/Segmentation/ and VOCdevkit/VOC2012/."
)


def labels_from_xml(xml_path):
    """Sorted VOC labels (1..20) named by any ``<name>`` tag of one annotation XML."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        message = f"{xml_path} is not valid XML ({error}); re-extract the VOC archive."
        raise ValueError(message) from None
    names = {(element.text or "").strip() for element in root.iter("name")}
    return sorted(VOC_LABEL_OF_NAME[name] for name in names if name in VOC_LABEL_OF_NAME)


def labels_from_mask(mask_path):
    """Sorted VOC labels (1..20) present in one segmentation PNG (0 and 255 dropped)."""
    values = np.unique(read_label_map(mask_path))
    values = values[(values != 0) & (values != IGNORE_VALUE)]
    if values.size and values.max() > len(VOC_FOREGROUND):
        raise ValueError(f"{mask_path}: values {values.tolist()} exceed the 20 VOC classes.")
    return values.tolist()


def train_aug_and_val_ids(voc_root):
    """Sorted ids of ``ImageSets/Segmentation/{train_aug,val}.txt`` (train_aug ∪ val)."""
    require_path(voc_root, "VOC 2012 folder", VOC2012_HINT)
    split_dir = os.path.join(voc_root, "ImageSets", "Segmentation")
    train_aug = require_path(
        os.path.join(split_dir, "train_aug.txt"), "VOC train_aug list", TRAIN_AUG_HINT
    )
    val = require_path(os.path.join(split_dir, "val.txt"), "VOC val list", VOC2012_HINT)
    return sorted(set(read_id_list(train_aug)) | set(read_id_list(val)))


def voc_image_labels(voc_root, from_masks=False, workers=1):
    """Image-level labels of VOC 2012 train_aug ∪ val.

    Args:
        voc_root (str): ``VOCdevkit/VOC2012``.
        from_masks (bool): read ``SegmentationClassAug/<id>.png``, not ``Annotations/<id>.xml``.
    Returns:
        dict[str, list[int]]: {image id: sorted labels 1..20}.
    """
    ids = train_aug_and_val_ids(voc_root)
    if from_masks:
        folder, extension, read = "SegmentationClassAug", ".png", labels_from_mask
        what, hint = "VOC SegmentationClassAug mask", TRAIN_AUG_HINT
    else:
        folder, extension, read = "Annotations", ".xml", labels_from_xml
        what, hint = "VOC annotation XML", VOC2012_HINT
    paths = [os.path.join(voc_root, folder, image_id + extension) for image_id in ids]
    require_path(os.path.join(voc_root, folder), f"{what} folder", hint)
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        raise FileNotFoundError(
            f"Missing {len(missing)} {what}(s) of train_aug ∪ val ids, e.g. {missing[0]}\n{hint}"
        )
    labels = parallel_map(read, paths, workers=workers, desc=f"VOC labels from {folder}")
    return dict(zip(ids, labels))
