"""COCO-Object labels (0 = background, 1..80 things) for ``coco_stuff164k``: those that CDAM's released
converter (inherited from SCLIP) writes from the COCO-Stuff maps.

Output: ``coco_stuff164k/annotations/<split>/<id>_instanceTrainIds.png``, single-channel uint8.
Two sources give the same class order (contiguous id = rank of the COCO category id):

- ``stuffthingmaps``: the COCO-Stuff164k PNGs ``annotations/<split>/<id>.png`` whose pixel value is
  the COCO-Stuff id - 1 (0..181, 255 = unlabeled). Things become 1..80, stuff and unlabeled 0.
- ``instances``: COCO ``instances_<split>.json`` rasterised by :mod:`.coco_instances`.
"""
import os

from .coco_instances import load_instances, write_instance_label_pngs
from ...utils.files import require_path
from .label_mapping import LabelMapping, convert_label_pngs, png_pairs

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


def stuffthingmap_mapping():
    """Raw stuffthingmap value -> COCO-Object label: the 80 used thing values get
    1..80 in ascending order, stuff 91..181 and unlabeled 255 get 0. Raw 90, the ten unused thing
    values and 182..254 are unknown (none of them occurs in COCO-Stuff164k)."""
    thing_values = [value for value in range(90) if value not in UNUSED_THING_VALUES]
    label_of_value = {value: label for label, value in enumerate(thing_values, start=1)}
    label_of_value.update({value: 0 for value in STUFF_VALUES})
    label_of_value[UNLABELED_VALUE] = 0
    return LabelMapping.from_dict(label_of_value)


def convert_stuffthingmap(raw):
    """Map a raw stuffthingmap (integer (H, W)) to COCO-Object labels (uint8 (H, W), 0..80).

    Raises ``ValueError`` on values outside the conversion table: they indicate a file that is not
    a COCO-Stuff164k stuffthingmap (e.g. already converted, or a colour rendering).
    """
    return stuffthingmap_mapping()(raw)


def stuffthingmap_pairs(annotation_dir, output_suffix):
    """(output path, source path) pairs for every stuffthingmap PNG of one split folder; files
    written by a converter (names containing "TrainIds") are not sources."""
    require_path(annotation_dir, "COCO-Stuff164k stuffthingmaps folder", STUFFTHINGMAPS_HINT)
    pairs = png_pairs(annotation_dir, annotation_dir, output_suffix, exclude="TrainIds")
    if not pairs:
        raise FileNotFoundError(
            f"No stuffthingmap PNGs (<id>.png) in {annotation_dir}.\n{STUFFTHINGMAPS_HINT}"
        )
    return pairs


def prepare_from_stuffthingmaps(coco_stuff_root, split, workers=1):
    """Convert ``annotations/<split>/*.png`` in place; returns a ``WriteSummary``."""
    pairs = stuffthingmap_pairs(os.path.join(coco_stuff_root, "annotations", split), OUTPUT_SUFFIX)
    return convert_label_pngs(
        pairs, stuffthingmap_mapping(), workers=workers, desc=f"COCO-Object {split}"
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
