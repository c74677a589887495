"""COCO run-length encoding of every label's mask in a label map, from one pass over its runs."""
from typing import Dict, List, Tuple

import numpy as np


def encode_label_masks(labels: np.ndarray) -> List[Tuple[int, Dict]]:
    """(H, W) integer labels -> [(label, RLE)] for each label present, in ascending order.

    Each RLE equals ``pycocotools.mask.encode`` of ``labels == label`` (a dict with ``size``
    [H, W] and compressed ``counts`` bytes). Encoding label by label reads the whole map once per
    label; here the map is split once into runs of equal labels in COCO's column-major order, the
    runs are grouped by label with a stable (radix) sort, and each label's alternating
    background/foreground counts are taken from its runs' starts and ends. pycocotools only
    compresses the counts.
    """
    import pycocotools.mask as mask_util  # optional dependency, only for written predictions

    height, width = labels.shape
    flat = np.ascontiguousarray(labels.T).reshape(-1)  # COCO counts run down the columns
    pixels = flat.size
    run_starts = np.flatnonzero(flat[1:] != flat[:-1]).astype(np.int64)
    run_starts += 1
    run_starts = np.concatenate(([0], run_starts))
    run_ends = np.append(run_starts[1:], pixels)
    run_labels = flat[run_starts]

    order = np.argsort(run_labels, kind="stable")  # keeps each label's runs in image order
    run_labels, run_starts, run_ends = run_labels[order], run_starts[order], run_ends[order]
    first = np.flatnonzero(np.concatenate(([True], run_labels[1:] != run_labels[:-1])))
    last = np.append(first[1:], len(run_labels)) - 1

    # Per label: [gap before run 1, run 1, gap before run 2, run 2, ..., trailing gap]. The first
    # gap may be 0 (the mask starts with the label), as in pycocotools; the trailing one is
    # written only when it is not.
    previous_end = np.concatenate(([0], run_ends[:-1]))
    previous_end[first] = 0
    group = np.zeros(len(run_labels), dtype=np.int64)
    group[first[1:]] = 1
    slot = 2 * np.arange(len(run_labels)) + np.cumsum(group)  # one extra slot per label
    counts = np.empty(2 * len(run_labels) + len(first), dtype=np.uint32)
    counts[slot] = run_starts - previous_end
    counts[slot + 1] = run_ends - run_starts
    trailing = pixels - run_ends[last]
    counts[slot[last] + 2] = trailing
    begins = slot[first]
    stops = slot[last] + 2 + (trailing > 0)

    encoded = []
    for label, begin, stop in zip(run_labels[first].tolist(), begins.tolist(), stops.tolist()):
        rle = {"size": [height, width], "counts": counts[begin:stop]}
        encoded.append((label, mask_util.frPyObjects(rle, height, width)))
    return encoded
