"""COCO-Object labels (0 = background, 1..80 things) for ``coco_stuff164k`` (cdam.md §5.2).

Output: ``coco_stuff164k/annotations/<split>/<id>_instanceTrainIds.png``, single-channel uint8.
Two sources give the same class order (contiguous id = rank of the COCO category id):

- ``stuffthingmaps``: the COCO-Stuff164k PNGs ``annotations/<split>/<id>.png`` whose pixel value is
  the COCO-Stuff id - 1 (0..181, 255 = unlabeled). Things become 1..80, stuff and unlabeled 0.
- ``instances``: COCO ``instances_<split>.json`` rasterised by :mod:`.coco_instances`.
"""
import os

import numpy as np
from PIL import Image

from ..label_io import read_label_map
from .coco_instances import load_instances, write_instance_label_pngs
from .files import prepare_output_dir, require_path, save_label_png
from .parallel import write_missing

OUTPUT_SUFFIX = "_instanceTrainIds.png"
# Raw stuffthingmap values of the 10 COCO category ids that have no annotations (12, 26, 29, ...).
UNUSED_THING_VALUES = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82)
STUFF_VALUES = range(91, 182)
UNLABELED_VALUE = 255

STUFFTHINGMAPS_HINT = (
    "Download stuffthingmaps_trainval2017.zip from "
    "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/"
    "stuffthingmaps_trainval2017.zip and unzip it into coco_stuff164k/annotations/ (giving "
    "annotations/train2017/*.png and annotations/val2017/*.png)."
)
IMAGES_HINT = (
    "Download val2017.zip (and train2017.zip if needed) from https://cocodataset.org/#download and "
    "unzip it into coco_stuff164k/images/."
)


def stuffthingmap_table():
    """Lookup table for raw stuffthingmap values (cdam.md §5.2).

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(labels, known)``, both of shape (256,): ``labels[v]`` is
        the COCO-Object label of raw value ``v`` and ``known[v]`` says whether ``v`` is in the
        conversion table at all (raw 90, the ten unused thing values and 182..254 are not; none
        of them occurs in COCO-Stuff164k).
    """
    thing_values = [value for value in range(90) if value not in UNUSED_THING_VALUES]
    labels = np.zeros(256, dtype=np.uint8)
    labels[thing_values] = np.arange(1, len(thing_values) + 1)
    known = np.zeros(256, dtype=bool)
    known[thing_values] = True
    known[list(STUFF_VALUES)] = True
    known[UNLABELED_VALUE] = True
    return labels, known


def convert_stuffthingmap(raw):
    """Map a raw stuffthingmap (integer (H, W)) to COCO-Object labels (uint8 (H, W), 0..80).

    Raises ``ValueError`` on values outside the conversion table: they indicate a file that is not
    a COCO-Stuff164k stuffthingmap (e.g. already converted, or a colour rendering).
    """
    labels, known = stuffthingmap_table()
    values = np.unique(raw).tolist()
    unexpected = [value for value in values if not (0 <= value < len(known) and known[value])]
    if unexpected:
        raise ValueError(f"values {unexpected} are not COCO-Stuff164k stuffthingmap values")
    return labels[raw]


def _convert_one(task):
    output_path, source_path = task
    try:
        label = convert_stuffthingmap(read_label_map(source_path))
    except ValueError as error:
        raise ValueError(f"{source_path}: {error}") from None
    save_label_png(label, output_path)


def _source_size(task):
    with Image.open(task[1]) as source:  # reads the header only
        return source.height, source.width


def stuffthingmap_tasks(annotation_dir):
    """(output path, source path) pairs for every stuffthingmap PNG of one split folder."""
    names = sorted(
        name
        for name in os.listdir(annotation_dir)
        if name.endswith(".png") and "TrainIds" not in name and not name.startswith(".")
    )
    return [
        (
            os.path.join(annotation_dir, name[: -len(".png")] + OUTPUT_SUFFIX),
            os.path.join(annotation_dir, name),
        )
        for name in names
    ]


def prepare_from_stuffthingmaps(coco_stuff_root, split, workers=1):
    """Convert ``annotations/<split>/*.png`` in place; returns a ``WriteSummary``."""
    annotation_dir = os.path.join(coco_stuff_root, "annotations", split)
    require_path(annotation_dir, "COCO-Stuff164k stuffthingmaps folder", STUFFTHINGMAPS_HINT)
    tasks = stuffthingmap_tasks(annotation_dir)
    if not tasks:
        raise FileNotFoundError(
            f"No stuffthingmap PNGs (<id>.png) in {annotation_dir}.\n{STUFFTHINGMAPS_HINT}"
        )
    prepare_output_dir(annotation_dir)
    return write_missing(
        _convert_one, tasks, workers=workers, desc=f"COCO-Object {split}", size_of=_source_size
    )


def prepare_from_instances(coco_stuff_root, split, instances_json, workers=1):
    """Rasterise ``instances_<split>.json`` into ``annotations/<split>`` (every image, even
    unannotated ones, because the dataset evaluates every image); returns a ``WriteSummary``."""
    data = load_instances(instances_json)
    return write_instance_label_pngs(
        data,
        os.path.join(coco_stuff_root, "annotations", split),
        OUTPUT_SUFFIX,
        annotated_only=False,
        workers=workers,
        desc=f"COCO-Object {split}",
    )


def images_without_labels(coco_stuff_root, split):
    """Ids of ``images/<split>/*.jpg`` that have no ``<id>_instanceTrainIds.png`` (sorted)."""
    image_dir = os.path.join(coco_stuff_root, "images", split)
    annotation_dir = os.path.join(coco_stuff_root, "annotations", split)
    image_ids = [name[: -len(".jpg")] for name in os.listdir(image_dir) if name.endswith(".jpg")]
    return sorted(
        image_id
        for image_id in image_ids
        if not os.path.exists(os.path.join(annotation_dir, image_id + OUTPUT_SUFFIX))
    )
