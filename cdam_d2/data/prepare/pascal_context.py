"""PASCAL Context 60-class (0 = background, 1..59) and 59-class (0..58, background ignored) labels
from the original 459-class annotations.

Inputs (from https://cs.stanford.edu/~roozbeh/pascal-context/): ``trainval/<id>.mat`` files holding
``LabelMap``, a (H, W) array of 1-based indices into the 459 names of ``labels.txt`` (lines such as
``1: accordion``; 0, if present, means unlabeled). Each of the 59 ``CONTEXT59_FOREGROUND`` names
is looked up by name and gets its position + 1; every other index becomes 0. That list is mmseg's
``PascalContext60Dataset`` order; it is alphabetical, so matching by name equals mmseg's converter,
which maps the sorted 459-class ids of these names to 1..59.

Context59 is Context60 with the background ignored (255) and the 59 classes as 0..58, i.e.
MMSegmentation's ``reduce_zero_label`` as the training-free peers' ``PascalContext59Dataset`` applies
it to the 60-class maps; both are written from the same ``.mat`` files.
"""
import os

import numpy as np

from ..datasets.builtin_meta import CONTEXT59_FOREGROUND
from ...utils.files import (
    prepare_output_dir,
    read_id_list,
    require_path,
    save_label_png,
    save_lines,
)
from .label_mapping import shift_down_mapping
from .parallel import write_missing

CONTEXT_ANNOTATIONS_HINT = (
    "Download trainval.tar.gz (trainval/<id>.mat) and the 459-class name list labels.txt from "
    "https://cs.stanford.edu/~roozbeh/pascal-context/ and put both into the context dir "
    "(default VOCdevkit/VOC2010/)."
)
VOC2010_HINT = (
    "Download VOCtrainval_03-May-2010.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ and "
    "extract it so that VOCdevkit/VOC2010/ exists, or pass --train-list/--val-list."
)


def read_label_names(labels_txt):
    """Parse ``labels.txt`` (``<index>: <name>`` per line) into {index: name}."""
    require_path(labels_txt, "PASCAL Context 459-class names", CONTEXT_ANNOTATIONS_HINT)
    names = {}
    with open(labels_txt) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            index, separator, name = line.partition(":")
            if not separator or not index.strip().isdigit():
                raise ValueError(
                    f"{labels_txt}:{line_number}: expected '<index>: <name>', got {line.strip()!r}"
                )
            names[int(index)] = name.strip()
    return names


def context60_table(label_names):
    """Lookup table from 459-class index to Context60 label.

    Args:
        label_names (dict[int, str]): {1-based index: name}, as read by :func:`read_label_names`.
    Returns:
        np.ndarray: uint8 of shape (max index + 1,); entry 0 (unlabeled) and unlisted names are 0.
    """
    index_of_name = {name: index for index, name in label_names.items()}
    missing = [name for name in CONTEXT59_FOREGROUND if name not in index_of_name]
    if missing:
        raise ValueError(
            f"labels.txt lacks the Context59 class name(s) {missing}; is it the 459-class list?"
        )
    table = np.zeros(max(label_names) + 1, dtype=np.uint8)
    for label, name in enumerate(CONTEXT59_FOREGROUND, start=1):
        table[index_of_name[name]] = label
    return table


def context59_table(label_names):
    """Like :func:`context60_table` for Context59: background/unlabeled 255, the classes 0..58."""
    return shift_down_mapping(len(CONTEXT59_FOREGROUND)).labels[context60_table(label_names)]


def convert_label_map(label_map, table):
    """Map a 459-class ``LabelMap`` (int (H, W)) through ``table`` (uint8 (H, W))."""
    label_map = np.asarray(label_map)
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(table)):
        raise ValueError(
            f"LabelMap values span [{label_map.min()}, {label_map.max()}], outside the "
            f"{len(table) - 1} classes of labels.txt"
        )
    return table[label_map.astype(np.int64)]


def _convert_one(task):
    from scipy.io import loadmat

    output_path, mat_path, table = task
    contents = loadmat(mat_path)
    if "LabelMap" not in contents:
        raise ValueError(f"{mat_path} has no 'LabelMap' array; is it a PASCAL Context .mat file?")
    try:
        label = convert_label_map(contents["LabelMap"], table)
    except ValueError as error:
        raise ValueError(f"{mat_path}: {error}") from None
    save_label_png(label, output_path)


def _label_map_size(task):
    from scipy.io import whosmat

    shapes = {name: shape for name, shape, _ in whosmat(task[1])}  # reads headers only
    return shapes.get("LabelMap")


def available_ids(mat_dir):
    """Sorted ids of ``<mat_dir>/<id>.mat``."""
    require_path(mat_dir, "PASCAL Context trainval folder", CONTEXT_ANNOTATIONS_HINT)
    return sorted(name[: -len(".mat")] for name in os.listdir(mat_dir) if name.endswith(".mat"))


def write_context60_pngs(context_dir, output_dir, workers=1):
    """Convert every ``<context_dir>/trainval/<id>.mat`` to ``<output_dir>/<id>.png`` (0..59).

    Returns:
        WriteSummary
    """
    return _write_context_pngs(context_dir, output_dir, context60_table, workers, "Context60")


def write_context59_pngs(context_dir, output_dir, workers=1):
    """Convert every ``<context_dir>/trainval/<id>.mat`` to ``<output_dir>/<id>.png`` (0..58, 255).

    Returns:
        WriteSummary
    """
    return _write_context_pngs(context_dir, output_dir, context59_table, workers, "Context59")


def _write_context_pngs(context_dir, output_dir, make_table, workers, desc):
    table = make_table(read_label_names(os.path.join(context_dir, "labels.txt")))
    mat_dir = os.path.join(context_dir, "trainval")
    ids = available_ids(mat_dir)
    if not ids:
        raise FileNotFoundError(f"No <id>.mat files in {mat_dir}.\n{CONTEXT_ANNOTATIONS_HINT}")
    prepare_output_dir(output_dir)
    tasks = [
        (
            os.path.join(output_dir, f"{image_id}.png"),
            os.path.join(mat_dir, f"{image_id}.mat"),
            table,
        )
        for image_id in ids
    ]
    return write_missing(
        _convert_one, tasks, workers=workers, desc=desc, size_of=_label_map_size
    )


def split_ids(list_path, available):
    """Ids of a split list that have a ``.mat`` file.

    Returns:
        tuple[list[str], list[str]]: (sorted kept ids, sorted ids of the list without a ``.mat``).
    """
    require_path(list_path, "split list", VOC2010_HINT)
    listed = set(read_id_list(list_path))
    available = set(available)
    return sorted(listed & available), sorted(listed - available)


def write_context_splits(voc2010_root, context_dir, list_paths=None):
    """Write ``ImageSets/SegmentationContext/{train,val}.txt`` under ``voc2010_root``.

    The splits are the given lists (``{"train": path, "val": path}``) or, by default, VOC2010's
    ``ImageSets/Main/{train,val}.txt`` (4998 / 5105 ids): PASCAL Context annotates all of VOC2010
    trainval and keeps its train/val division. Either way only ids with a ``.mat`` file are kept.

    Returns:
        dict[str, tuple[list[str], list[str]]]: {split: (written ids, listed ids without .mat)}.
    """
    list_paths = list_paths or {
        split: os.path.join(voc2010_root, "ImageSets", "Main", f"{split}.txt")
        for split in ("train", "val")
    }
    available = available_ids(os.path.join(context_dir, "trainval"))
    split_dir = os.path.join(voc2010_root, "ImageSets", "SegmentationContext")
    prepare_output_dir(split_dir)
    results = {}
    for split, list_path in list_paths.items():
        kept, without_mat = split_ids(list_path, available)
        save_lines(kept, os.path.join(split_dir, f"{split}.txt"))
        results[split] = (kept, without_mat)
    return results
