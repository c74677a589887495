"""Semantic segmentation metrics from confusion matrices (numpy, OpenCV and torch; no detectron2).

The confusion matrix has shape (C+1, C+1): rows are predictions, columns are ground truth, and
index C collects ignored ground-truth pixels, exactly as Detectron2's ``SemSegEvaluator`` lays
it out, so matrices from both can be compared and summed across processes. Row C holds pixels
predicted as no class (the ignore value of a pseudo-label map); a model's arg-max never fills it.
They count as misses of their ground-truth class, as in the evaluation script of the WSSS
releases (MCTformer, ClusterCAM).

Only the arg-max over the scores runs in torch (on the scores' device, with torch's threads);
the per-pixel bookkeeping on (H, W) maps is single-threaded numpy and OpenCV, since every
multi-threaded torch call on such small maps costs a thread hand-off that, on a busy machine,
takes longer than the work.
"""
import math
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CONVENTIONS = ("detectron2", "mmseg", "release")
# The WSSS releases' evaluation script adds this to every IoU, FP and FN denominator.
RELEASE_EPS = 1e-10
# cv2.calcHist counts in float32, exact up to 2**24 per bin: histograms are summed over chunks.
_HISTOGRAM_CHUNK = 2**24


def argmax_labels(scores: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """(C, H, W) scores -> (H, W) labels of ``dtype``, equal to ``scores.argmax(dim=0)``.

    Ties go to the first class and NaN counts as the maximum, as in torch. On CPU, torch's
    arg-max over the leading dimension is a scalar loop that dominated the evaluation time.
    Instead, the (C, H*W) storage is read, without a copy, as a channels-last (1, H*W/B, C, B)
    image whose channels are pixels and whose height is the class axis; max-pooling it with a
    (C, 1) window and indices runs torch's vectorised channels-last kernel, which keeps the first
    maximum. The B column blocks give that kernel's threads work. The kernel lets a later NaN
    replace an earlier one, so pixels whose maximum is NaN are recomputed with torch's reduction.
    """
    scores = scores.detach()
    if scores.device.type != "cpu" or not scores.is_floating_point():
        return scores.max(dim=0).indices.to(dtype)
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()  # exact and order-preserving; not every torch pools half on CPU
    scores = scores.contiguous()
    num_classes, height, width = scores.shape
    pixels = height * width
    # Power-of-two block counts turn the index arithmetic below into a shift.
    blocks = 1
    while blocks < 2 * torch.get_num_threads() and pixels % (2 * blocks) == 0:
        blocks *= 2
    block_pixels = pixels // blocks
    as_image = scores.as_strided(
        (1, block_pixels, num_classes, blocks), (scores.numel(), 1, pixels, block_pixels)
    )
    maxima, positions = F.max_pool2d(as_image, (num_classes, 1), return_indices=True)
    # positions[0, p, 0, b] = c * B + b for pixel b * (H*W/B) + p.
    codes = positions.numpy()[0, :, 0, :]
    np.right_shift(codes, blocks.bit_length() - 1, out=codes)
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    labels = torch.from_numpy(codes.T.astype(numpy_dtype, order="C")).view(height, width)
    if np.isnan(maxima.numpy().sum()):  # cheap test first: a vectorised sum propagates NaN
        nan_max = maxima[0, :, 0, :].t().reshape(height, width).isnan()
        labels[nan_max] = scores[:, nan_max].max(dim=0).indices.to(dtype)
    return labels


def pair_histogram(rows: np.ndarray, cols: np.ndarray, num_rows: int, num_cols: int):
    """(num_rows, num_cols) int64 counts of the pixel pairs (rows, cols) of two uint8 maps.

    Values must lie in [0, num_rows) and [0, num_cols), with num_rows * num_cols <= 65536. The
    pairs are packed into 16-bit keys and counted by ``cv2.calcHist``, several times faster
    than ``np.bincount``, which first widens every key to int64.
    """
    import cv2  # imported here so that the metrics import without OpenCV

    keys = rows.astype(np.uint16).reshape(1, -1)
    keys *= num_cols
    keys += cols.reshape(1, -1)
    bins = num_rows * num_cols
    counts = np.zeros(bins, dtype=np.int64)
    for start in range(0, keys.shape[1], _HISTOGRAM_CHUNK):
        part = keys[:, start:start + _HISTOGRAM_CHUNK]
        counts += cv2.calcHist([part], [0], None, [bins], [0, bins]).astype(np.int64).reshape(-1)
    return counts.reshape(num_rows, num_cols)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int):
    """Confusion matrix of one (H, W) prediction in [0, C] against its (H, W) label map.

    A prediction value C means "no class" (row C). Label values outside [0, C) other than
    ``ignore_label`` are counted, by value, and put with the ignored pixels; the caller decides
    whether they are an error.

    Returns:
        conf: (C+1, C+1) int64, rows = prediction, columns = label, column C = ignored pixels.
        invalid: {label value: pixel count} of the out-of-range values, empty when there are none.
    """
    conf = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    if pred.dtype == gt.dtype == np.uint8 and num_classes <= ignore_label <= 255:
        # One histogram over (prediction, raw label byte) pairs also finds the invalid values.
        counts = pair_histogram(pred, gt, num_classes + 1, 256)
        conf[:, :num_classes] = counts[:, :num_classes]
        conf[:, num_classes] = counts[:, num_classes:].sum(axis=1)
        per_value = counts[:, num_classes:].sum(axis=0)
        per_value[ignore_label - num_classes] = 0
        values = np.flatnonzero(per_value)
        invalid = dict(zip((values + num_classes).tolist(), per_value[values].tolist()))
        return conf, invalid
    labels = ignored_as_last_class(gt, num_classes, ignore_label).astype(np.int64)
    pairs = (num_classes + 1) * pred.astype(np.int64) + labels
    conf += np.bincount(pairs.reshape(-1), minlength=conf.size).reshape(conf.shape)
    return conf, invalid_values(gt, num_classes, ignore_label)


def invalid_values(labels: np.ndarray, num_classes: int, ignore_label: int) -> dict:
    """{value: pixel count} of the values of an (H, W) label map outside [0, C) other than ``ignore_label``."""
    if labels.dtype == np.uint8:
        import cv2

        counts = cv2.calcHist([labels.reshape(1, -1)], [0], None, [256], [0, 256]).reshape(-1)
        values = [v for v in np.flatnonzero(counts) if v >= num_classes and v != ignore_label]
        return {int(v): int(counts[v]) for v in values}
    out_of_range = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_label)
    values, pixels = np.unique(labels[out_of_range], return_counts=True)
    return dict(zip(values.tolist(), pixels.tolist()))


def invalid_values_message(invalid: dict, path: str, num_classes: int, ignore_label: int) -> str:
    """The sentence naming the label map ``path`` and its ``invalid`` values (see :func:`invalid_values`)."""
    return (f"Label map '{path}' has values {sorted(invalid)[:10]} outside [0, {num_classes}) that are not the "
            f"ignore label {ignore_label} ({sum(invalid.values())} pixels).")


def ignored_as_last_class(labels: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """(H, W) labels -> labels in [0, C]: ``ignore_label`` and out-of-range values become C.

    For label maps, C is the column of ignored pixels; for predictions (valid values only, the ignore
    value of a pseudo-label map included) it is the row of pixels predicted as no class. The result
    is uint8 up to C = 255 and int64 beyond, where bytes would wrap around.
    """
    if labels.dtype == np.uint8 and num_classes <= 255:
        import cv2

        table = np.minimum(np.arange(256), num_classes).astype(np.uint8)
        if 0 <= ignore_label <= 255:
            table[ignore_label] = num_classes
        return cv2.LUT(labels, table)
    dtype = np.uint8 if num_classes <= 255 else np.int64
    labelled = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
    return np.where(labelled, labels, np.array(num_classes, dtype)).astype(dtype)


def mask_boundary(label_map: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Boundary band of an (H, W) uint8 label map: the map minus its grey-level erosion (uint8).

    Detectron2's definition: pad the map with one ring of zeros, erode it r = max(1,
    round(ratio * diagonal)) times with a 3x3 square (``cv2.erode``, whose border never wins an
    erosion), crop the ring. r erosions by a 3x3 square are one erosion by a (2r+1)x(2r+1)
    square, and every such window that reaches outside the image covers the zero ring, so this
    is one erosion by that square with zeros outside the image, which OpenCV computes as
    separable row and column minima.
    """
    import cv2  # imported here so that the metrics import without OpenCV

    if label_map.dtype != np.uint8 or label_map.ndim != 2:
        raise ValueError(
            f"mask_boundary expects an (H, W) uint8 label map, got {label_map.dtype} of shape "
            f"{label_map.shape}."
        )
    height, width = label_map.shape
    radius = max(1, int(round(dilation_ratio * math.sqrt(height**2 + width**2))))
    square = np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8)
    eroded = cv2.erode(label_map, square, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return label_map - eroded  # the erosion never exceeds the map: no wrap-around


def boundary_confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(C+1, C+1) int64 confusion matrix of the boundary bands of two (H, W) uint8 maps.

    ``pred`` holds classes in [0, C); ``gt`` holds classes in [0, C] with C for ignored pixels
    (see ``ignored_as_last_class``). This is Detectron2's boundary matrix,
    ``bincount((C+1) * b_pred + b_gt)``, computed without its uint8 overflow (which, from 16
    classes up, wraps pairs past 255 onto other cells).
    """
    conf = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    conf[:num_classes] = pair_histogram(
        mask_boundary(pred), mask_boundary(gt), num_classes, num_classes + 1
    )
    return conf


def segmentation_metrics(conf: np.ndarray, class_names: Sequence[str], convention: str):
    """mIoU, fwIoU, per-class IoU, mACC, pACC, per-class ACC, FP and FN (×100) from a (C+1)² matrix.

    ``convention="detectron2"`` leaves classes without ground-truth pixels out of the means;
    ``"mmseg"`` counts such a class as IoU 0 when it is predicted (absent from both: left out);
    ``"release"`` is the WSSS releases' script: every class is in the means, with
    IoU = TP / (T + P - TP + 1e-10), so a class absent from both prediction and labels counts 0.
    FP and FN are the means, over the classes of the mIoU, of (P - TP) / union and
    (T - TP) / union (P: predicted pixels, T: labelled pixels, TP: both).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown metric convention '{convention}'; use one of {CONVENTIONS}.")
    # float64 numpy with Detectron2's order of operations, so its numbers are matched bit for bit.
    full = np.asarray(conf).astype(np.float64)
    conf = full[:-1, :-1]
    tp = conf.diagonal()
    gt_pixels = full[:, :-1].sum(axis=0)  # row C (predicted as no class) holds misses
    pred_pixels = conf.sum(axis=1)
    union = gt_pixels + pred_pixels - tp
    has_gt = gt_pixels > 0
    if convention == "release":
        iou_valid = np.ones_like(has_gt)
        denominator = union + RELEASE_EPS
    else:
        iou_valid = (has_gt if convention == "detectron2" else np.ones_like(has_gt)) & (union > 0)
        denominator = union
    acc = np.full(len(tp), np.nan)
    iou = np.full(len(tp), np.nan)
    acc[has_gt] = tp[has_gt] / gt_pixels[has_gt]
    iou[iou_valid] = tp[iou_valid] / denominator[iou_valid]
    class_weights = gt_pixels / np.sum(gt_pixels)
    valid_denominator = denominator[iou_valid]

    res = OrderedDict()
    res["mIoU"] = 100 * (np.sum(iou[iou_valid]) / np.sum(iou_valid))
    res["fwIoU"] = 100 * np.sum(iou[iou_valid] * class_weights[iou_valid])
    for name, value in zip(class_names, iou):
        res[f"IoU-{name}"] = 100 * value
    res["mACC"] = 100 * (np.sum(acc[has_gt]) / np.sum(has_gt))
    res["pACC"] = 100 * (np.sum(tp) / np.sum(gt_pixels))
    for name, value in zip(class_names, acc):
        res[f"ACC-{name}"] = 100 * value
    res["FP"] = 100 * np.mean((pred_pixels - tp)[iou_valid] / valid_denominator)
    res["FN"] = 100 * np.mean((gt_pixels - tp)[iou_valid] / valid_denominator)
    return OrderedDict((key, float(value)) for key, value in res.items())


def threshold_histogram(peak: np.ndarray, peak_class: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                        num_classes: int, ignore_label: int):
    """Counts that give, for every background threshold at once, the confusion matrix of the label map
    "background (0) where ``peak <= t``, else ``peak_class``" (see :func:`threshold_confusion_matrices`).

    A pixel is foreground exactly at the thresholds below its peak: with ascending thresholds, at the
    first j of them, j = the number of thresholds < peak. One histogram over (j, class, label) per
    image thus replaces one confusion matrix per threshold.

    Args:
        peak: (H, W) float score of the best foreground class (compared with ``thresholds`` in its dtype).
        peak_class: (H, W) integer class of that score, in [1, C).
        gt: (H, W) labels; values outside [0, C) other than ``ignore_label`` are counted as in
            :func:`confusion_matrix`.
        thresholds: (T,) ascending.

    Returns:
        hist: (T+1, C, C+1) int64, hist[j, c, g] = pixels foreground at exactly the first j thresholds,
            of class c and label g (column C: ignored labels).
        invalid: {label value: pixel count} of the out-of-range label values.
    """
    thresholds = np.asarray(thresholds, dtype=peak.dtype)
    if thresholds.ndim != 1 or np.any(np.diff(thresholds) <= 0):
        raise ValueError(f"thresholds must be a strictly ascending 1-D sequence, got {thresholds}")
    num_steps = len(thresholds) + 1
    columns = ignored_as_last_class(gt, num_classes, ignore_label)
    steps = np.searchsorted(thresholds, peak.reshape(-1), side="left")
    rows = steps * num_classes + peak_class.reshape(-1)
    shape = (num_steps, num_classes, num_classes + 1)
    if num_steps * num_classes * (num_classes + 1) <= 65536:
        counts = pair_histogram(rows.astype(np.uint16), columns, num_steps * num_classes, num_classes + 1)
    else:
        keys = rows.astype(np.int64) * (num_classes + 1) + columns.reshape(-1)
        counts = np.bincount(keys, minlength=int(np.prod(shape)))
    return counts.reshape(shape), invalid_values(gt, num_classes, ignore_label)


def threshold_confusion_matrices(hist: np.ndarray) -> np.ndarray:
    """(T+1, C, C+1) counts of :func:`threshold_histogram` (summed over images) -> (T, C+1, C+1)
    confusion matrices, one per threshold, laid out as :func:`confusion_matrix`'s."""
    num_steps, num_classes, _ = hist.shape
    # foreground[i] = pixels foreground at threshold i: those of the steps j > i.
    foreground = np.cumsum(hist[::-1], axis=0)[::-1][1:]
    conf = np.zeros((num_steps - 1, num_classes + 1, num_classes + 1), dtype=np.int64)
    conf[:, :num_classes] = foreground
    conf[:, 0] += hist.sum(axis=(0, 1)) - foreground.sum(axis=1)
    return conf
