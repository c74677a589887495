"""COCO instance annotations -> contiguous class ids, semantic label PNGs and image-level labels.

Conventions (shared by COCO-Object-from-instances and COCO-2014):

- Contiguous label = 1 + rank of the COCO category id in ascending order (1..80 on real COCO); 0 is
  background.
- Label maps: start from zeros, paint every **non-crowd** annotation of the image in annotation-list
  order, so later annotations overwrite earlier ones. Crowd annotations (``iscrowd=1``) are not
  painted: their pixels stay background unless a non-crowd annotation covers them. ClusterCAM's release
  does not say how its maps were made; this is the procedure common in weakly supervised segmentation
  code, and it keeps the maps free of 255 (nothing is ignored).
- Image-level labels count every annotation, crowd included: category c is present iff the image has at
  least one instance annotation of c.
"""
import json
import os
from collections import defaultdict

import numpy as np

from ...utils.files import prepare_output_dir, require_path, save_label_png
from .parallel import write_missing

COCO_ANNOTATIONS_HINT = (
    "Download the COCO annotation archive (annotations_trainval2014.zip or "
    "annotations_trainval2017.zip) from https://cocodataset.org/#download and unzip it so that "
    "this file exists."
)


def load_instances(json_path):
    """Load a COCO ``instances_*.json`` and check it has images, annotations and categories."""
    require_path(json_path, "COCO instance annotations", COCO_ANNOTATIONS_HINT)
    with open(json_path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as error:
            message = f"{json_path} is not valid JSON ({error}); download it again."
            raise ValueError(message) from None
    missing_keys = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing_keys:
        raise ValueError(
            f"{json_path} lacks the key(s) {missing_keys}; expected a COCO instances_*.json file."
        )
    return data


def contiguous_category_ids(categories):
    """Map COCO category ids to contiguous labels 1..K in ascending category-id order.

    Args:
        categories (list[dict]): the ``categories`` list of a COCO json.
    Returns:
        dict[int, int]: {category id: label}.
    """
    category_ids = sorted(category["id"] for category in categories)
    if len(category_ids) > 255:
        raise ValueError(f"{len(category_ids)} categories do not fit in an 8-bit label PNG.")
    return {category_id: label for label, category_id in enumerate(category_ids, start=1)}


def image_name(image):
    """File name without directory and extension, e.g. ``COCO_val2014_000000000042``."""
    return os.path.splitext(os.path.basename(image["file_name"]))[0]


def annotations_by_image(data, include_crowd):
    """{image id: [annotation, ...]} keeping the order of ``data["annotations"]``."""
    grouped = defaultdict(list)
    for annotation in data["annotations"]:
        if include_crowd or not annotation.get("iscrowd", 0):
            grouped[annotation["image_id"]].append(annotation)
    return grouped


def _label_of(annotation, category_to_label):
    try:
        return category_to_label[annotation["category_id"]]
    except KeyError:
        raise ValueError(
            f"Annotation {annotation.get('id')} has category_id {annotation['category_id']}, "
            "which is not in the json's categories."
        ) from None


def image_level_labels(data):
    """Sorted contiguous labels of every image that has at least one annotation (crowd included).

    Returns:
        dict[str, list[int]]: {image name: sorted labels}.
    """
    category_to_label = contiguous_category_ids(data["categories"])
    grouped = annotations_by_image(data, include_crowd=True)
    return {
        image_name(image): sorted({_label_of(a, category_to_label) for a in grouped[image["id"]]})
        for image in data["images"]
        if grouped.get(image["id"])
    }


def annotation_mask(segmentation, height, width):
    """Decode a COCO segmentation (polygons, RLE or compressed RLE) to a (H, W) bool mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    mask = mask_utils.decode(rle).astype(bool)
    if mask.shape != (height, width):
        raise ValueError(f"RLE of size {mask.shape} does not match the image {(height, width)}")
    return mask


def rasterize_instances(height, width, shapes):
    """Paint ``shapes`` in order onto a background map; later shapes overwrite earlier ones.

    Args:
        height, width (int): image size.
        shapes (list[tuple[segmentation, int]]): COCO segmentations with their labels.
    Returns:
        np.ndarray: uint8 (H, W) label map, 0 where no shape is painted.
    """
    label_map = np.zeros((height, width), dtype=np.uint8)
    for segmentation, label in shapes:
        label_map[annotation_mask(segmentation, height, width)] = label
    return label_map


def _write_label_png(task):
    output_path, height, width, shapes = task
    save_label_png(rasterize_instances(height, width, shapes), output_path)


def _label_size(task):
    return task[1], task[2]


def write_instance_label_pngs(data, output_dir, suffix, annotated_only, workers=1, desc=None):
    """Write one semantic label PNG per image of a COCO instances json (non-crowd, later wins).

    Args:
        data (dict): a loaded COCO instances json.
        output_dir (str): destination folder; file name = image name + ``suffix``.
        suffix (str): e.g. ``".png"`` or ``"_instanceTrainIds.png"``.
        annotated_only (bool): skip images without any annotation (crowd included).
        workers (int): processes for decoding and writing.
    Returns:
        WriteSummary
    """
    category_to_label = contiguous_category_ids(data["categories"])
    painted = annotations_by_image(data, include_crowd=False)
    annotated = annotations_by_image(data, include_crowd=True)
    prepare_output_dir(output_dir)
    tasks = [
        (
            os.path.join(output_dir, image_name(image) + suffix),
            image["height"],
            image["width"],
            [(a["segmentation"], _label_of(a, category_to_label)) for a in painted[image["id"]]],
        )
        for image in data["images"]
        if annotated.get(image["id"]) or not annotated_only
    ]
    return write_missing(_write_label_png, tasks, workers=workers, desc=desc, size_of=_label_size)
