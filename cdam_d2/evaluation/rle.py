"""COCO run-length encoding of every label's mask in a label map, from one pass over its runs."""
from typing import Dict, List, Tuple

import numpy as np


def encode_label_masks(labels: np.ndarray) -> List[Tuple[int, Dict]]:
    """(H, W) non-negative integer labels -> [(label, RLE)] for each label present, ascending.

    Each RLE equals ``pycocotools.mask.encode`` of ``labels == label`` (a dict with ``size``
    [H, W] and compressed ``counts`` bytes). Encoding label by label reads the whole map once per
    label; here the map is split once into runs of equal labels in COCO's column-major order and
    the runs are grouped by label with a stable (radix) sort. A label's counts are then the
    differences between 0, its runs' starts and ends in image order, and H*W: alternately
    background and foreground lengths, the first possibly 0, as in pycocotools, and a trailing 0
    dropped. pycocotools only compresses the counts.
    """
    import cv2  # optional dependencies, only for written predictions
    import pycocotools.mask as mask_util

    height, width = labels.shape
    if labels.dtype not in (np.uint8, np.int32):
        labels = labels.astype(np.int32)
    flat = cv2.transpose(labels).reshape(-1)  # COCO counts run down the columns
    pixels = flat.size
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    bounds = np.empty(len(changes) + 2, dtype=np.int64)  # run r spans [bounds[r], bounds[r+1])
    bounds[0], bounds[-1] = 0, pixels
    np.add(changes, 1, out=bounds[1:-1])
    run_labels = flat[bounds[:-1]]

    order = np.argsort(run_labels, kind="stable")  # keeps each label's runs in image order
    edges = np.empty(2 * len(order), dtype=np.int64)
    edges[0::2] = bounds[order]
    edges[1::2] = bounds[order + 1]
    runs_per_label = np.bincount(run_labels)
    present = np.flatnonzero(runs_per_label)
    last_run = np.cumsum(runs_per_label)[present]
    first_run = last_run - runs_per_label[present]

    encoded = []
    for label, begin, end in zip(present.tolist(), first_run.tolist(), last_run.tolist()):
        counts = np.diff(np.concatenate(([0], edges[2 * begin:2 * end], [pixels])))
        if counts[-1] == 0:  # the label's mask ends with the image
            counts = counts[:-1]
        rle = {"size": [height, width], "counts": counts.astype(np.uint32)}
        encoded.append((label, mask_util.frPyObjects(rle, height, width)))
    return encoded
