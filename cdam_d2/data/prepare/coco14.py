"""MS COCO 2014 for ClusterCAM: split lists, image-level labels, label PNGs (the release ships neither its
COCO label file nor its label PNGs, so both are rebuilt from the instance annotations).

Inputs: ``instances_{train2014,val2014}.json``. Outputs under ``COCO14/``:

- ``ImageSets/<split>.txt``: sorted names (``COCO_train2014_000000000009``) of the images with at
  least one instance annotation (82,081 train / 40,137 val on the real data).
- ``image_labels.json``: {name: sorted labels 1..80} for exactly those images, labels by ascending
  category id, crowd annotations included.
- ``SegmentationClass/<split>/<name>.png``: 0 = background, 1..80 from the non-crowd annotations in
  list order (later wins), for the same images; see :mod:`.coco_instances`.
"""
import os

from .coco_instances import (
    contiguous_category_ids,
    image_level_labels,
    load_instances,
    write_instance_label_pngs,
)
from ...utils.files import prepare_output_dir, save_json, save_lines

COCO14_SPLITS = ("train2014", "val2014")


def instances_json_path(instances_dir, split):
    """``<instances_dir>/instances_<split>.json``."""
    return os.path.join(instances_dir, f"instances_{split}.json")


def coco14_image_labels(instances_dir, splits=COCO14_SPLITS):
    """Image-level labels and split lists of several COCO splits.

    Returns:
        tuple[dict[str, list[int]], dict[str, list[str]]]: ({name: sorted labels} over all splits,
        {split: sorted names of its annotated images}).
    """
    labels, names_of_split, category_to_label = {}, {}, None
    for split in splits:
        json_path = instances_json_path(instances_dir, split)
        data = load_instances(json_path)
        split_category_to_label = contiguous_category_ids(data["categories"])
        if category_to_label is None:
            category_to_label = split_category_to_label
        elif split_category_to_label != category_to_label:
            raise ValueError(f"{json_path} has other categories than instances_{splits[0]}.json.")
        split_labels = image_level_labels(data)
        labels.update(split_labels)
        names_of_split[split] = sorted(split_labels)
    return labels, names_of_split


def write_coco14_image_labels(coco14_root, instances_dir, splits=COCO14_SPLITS):
    """Write ``image_labels.json`` and ``ImageSets/<split>.txt``; returns what
    :func:`coco14_image_labels` returns."""
    labels, names_of_split = coco14_image_labels(instances_dir, splits)
    split_dir = os.path.join(coco14_root, "ImageSets")
    prepare_output_dir(split_dir)
    for split, names in names_of_split.items():
        save_lines(names, os.path.join(split_dir, f"{split}.txt"))
    prepare_output_dir(coco14_root)
    save_json(labels, os.path.join(coco14_root, "image_labels.json"))
    return labels, names_of_split


def write_coco14_label_pngs(coco14_root, instances_dir, split, workers=1):
    """Write ``SegmentationClass/<split>/<name>.png`` for the annotated images of one split.

    Returns:
        WriteSummary
    """
    return write_instance_label_pngs(
        load_instances(instances_json_path(instances_dir, split)),
        os.path.join(coco14_root, "SegmentationClass", split),
        ".png",
        annotated_only=True,
        workers=workers,
        desc=f"COCO14 {split}",
    )
