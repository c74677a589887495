"""Build Detectron2-style dataset records from a :class:`SemSegLayout`, and pick a fixed, evenly spread
subset of them (no detectron2 needed)."""
import json
import os
from typing import Dict, List

import numpy as np

from ..label_io import stock_reader_problem
from .layouts import SemSegLayout


def default_datasets_root() -> str:
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def spread_subset(count: int, total: int) -> List[int]:
    """``count`` indices evenly spread over ``range(total)``, the first and the last included (all of them
    when count >= total): the same images every time."""
    if count >= total:
        return list(range(total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def _missing(layout: SemSegLayout, root: str, what: str, path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Dataset '{layout.name}': {what} not found at '{path}'. The datasets root is '{root}' "
        f"(set DETECTRON2_DATASETS to change it); to create the files, {layout.prepare_hint}."
    )


def _read_ids(layout: SemSegLayout, root: str) -> List[str]:
    image_dir = os.path.join(root, layout.image_dir)
    if not os.path.isdir(image_dir):
        raise _missing(layout, root, "image folder", image_dir)
    if layout.split_file is None:
        ext = layout.image_ext
        return sorted(f[: -len(ext)] for f in os.listdir(image_dir) if f.endswith(ext))
    split_path = os.path.join(root, layout.split_file)
    if not os.path.isfile(split_path):
        raise _missing(layout, root, "split file", split_path)
    with open(split_path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Dataset '{layout.name}': split file '{split_path}' lists an id twice.")
    return ids


def _read_image_labels(layout: SemSegLayout, root: str, ids: List[str]) -> Dict[str, List[int]]:
    path = os.path.join(root, layout.image_labels_file)
    if not os.path.isfile(path):
        raise _missing(layout, root, "image-level label file", path)
    with open(path) as f:
        table = json.load(f)
    num_classes = len(layout.classes)
    labels = {}
    for image_id in ids:
        if image_id not in table:
            raise KeyError(
                f"Dataset '{layout.name}': image '{image_id}' has no entry in the image-level "
                f"label file '{path}'. Regenerate it with {layout.prepare_hint}."
            )
        ids_of_image = sorted(int(c) for c in table[image_id])
        bad = [c for c in ids_of_image if not 1 <= c < num_classes]
        if bad:
            raise ValueError(
                f"Dataset '{layout.name}': image '{image_id}' in '{path}' has label ids {bad}; "
                f"foreground ids must lie in [1, {num_classes - 1}]."
            )
        labels[image_id] = ids_of_image
    return labels


def load_sem_seg_records(layout: SemSegLayout, root: str, dataset_name: str = None) -> List[dict]:
    """Records in split-file order (or sorted file order), each with ``file_name``,
    ``image_id``, ``meta`` (``dataset_name`` defaults to the layout's name), plus
    ``sem_seg_file_name`` and ``image_labels`` where the layout has them.
    Raises ``FileNotFoundError`` naming the missing path."""
    ids = _read_ids(layout, root)
    if layout.label_dir is not None and not os.path.isdir(os.path.join(root, layout.label_dir)):
        raise _missing(layout, root, "label folder", os.path.join(root, layout.label_dir))
    image_labels = _read_image_labels(layout, root, ids) if layout.image_labels_file else None
    records = []
    for image_id in ids:
        image_path = os.path.join(root, layout.image_dir, image_id + layout.image_ext)
        if not os.path.isfile(image_path):
            raise _missing(layout, root, f"image '{image_id}' listed in the split", image_path)
        record = {
            "file_name": image_path,
            "image_id": image_id,
            "meta": {"dataset_name": dataset_name or layout.name},
        }
        if layout.label_dir is not None:
            label_path = os.path.join(root, layout.label_dir, image_id + layout.label_suffix)
            if not os.path.isfile(label_path):
                raise FileNotFoundError(
                    f"Dataset '{layout.name}': the label map '{label_path}' of image "
                    f"'{image_path}' is missing; to create the files, {layout.prepare_hint}."
                )
            record["sem_seg_file_name"] = label_path
        if image_labels is not None:
            record["image_labels"] = image_labels[image_id]
        records.append(record)
    if layout.split_file is None and not records:
        raise _missing(layout, root, "images (*" + layout.image_ext + ")", os.path.join(root, layout.image_dir))
    _check_label_encoding(layout, records)
    return records


def _check_label_encoding(layout: SemSegLayout, records: List[dict]) -> None:
    """Every reader must see class indices: reject a split whose label maps are palette or colour
    PNGs (checked on the first one; the preparation tools write whole folders at once)."""
    if not records or "sem_seg_file_name" not in records[0]:
        return
    path = records[0]["sem_seg_file_name"]
    problem = stock_reader_problem(path)
    if problem:
        raise ValueError(
            f"Dataset '{layout.name}': the label map '{path}' {problem}. To create index PNGs, "
            f"{layout.prepare_hint}."
        )
