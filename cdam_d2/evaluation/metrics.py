"""Confusion-matrix semantic segmentation metrics in plain torch (no detectron2 needed).

The confusion matrix has shape (C+1, C+1): rows are predictions, columns are ground truth, and
index C collects ignored ground-truth pixels, exactly as Detectron2's ``SemSegEvaluator`` lays
it out, so matrices from both can be compared and summed across processes.
"""
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

CONVENTIONS = ("detectron2", "mmseg")


def argmax_labels(scores: torch.Tensor) -> torch.Tensor:
    """(C, H, W) scores -> (H, W) int64 labels, equal to ``scores.argmax(dim=0)``.

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
        return scores.max(dim=0).indices
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
    labels = positions[0, :, 0, :].t().reshape(height, width)
    labels.bitwise_right_shift_(blocks.bit_length() - 1)
    if maxima.sum().isnan():  # cheap test first: a vectorised sum propagates NaN
        nan_max = maxima[0, :, 0, :].t().reshape(height, width).isnan()
        labels[nan_max] = scores[:, nan_max].max(dim=0).indices
    return labels


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_label: int):
    """Confusion matrix of one (H, W) prediction in [0, C) against its (H, W) label map.

    Computed on ``pred``'s device. Label values outside [0, C) other than ``ignore_label`` are
    counted, by value, and put with the ignored pixels; the caller decides whether they are an
    error.

    Returns:
        conf: (C+1, C+1) int64, rows = prediction, columns = label, column C = ignored pixels.
        invalid: {label value: pixel count} of the out-of-range values, empty when there are none.
    """
    gt = gt.to(pred.device)
    if gt.dtype == torch.uint8 and num_classes <= ignore_label <= 255:
        # One histogram over (prediction, raw label byte) pairs also finds the invalid values.
        pairs = pred.int().mul_(256).add_(gt)
        counts = torch.bincount(pairs.reshape(-1), minlength=num_classes * 256)
        counts = counts.reshape(num_classes, 256)
        conf = counts.new_zeros(num_classes + 1, num_classes + 1)
        conf[:num_classes, :num_classes] = counts[:, :num_classes]
        conf[:num_classes, num_classes] = counts[:, num_classes:].sum(dim=1)
        per_value = counts[:, num_classes:].sum(dim=0)
        per_value[ignore_label - num_classes] = 0
        values = per_value.nonzero().flatten()
        invalid = {int(v) + num_classes: int(per_value[v]) for v in values.tolist()}
        return conf, invalid
    out_of_range = ((gt < 0) | (gt >= num_classes)) & (gt != ignore_label)
    invalid = {}
    if out_of_range.any():
        values, pixels = torch.unique(gt[out_of_range], return_counts=True)
        invalid = dict(zip(values.tolist(), pixels.tolist()))
    labels = gt.long().masked_fill(out_of_range | (gt == ignore_label), num_classes)
    pairs = (num_classes + 1) * pred.reshape(-1).long() + labels.reshape(-1)
    conf = torch.bincount(pairs, minlength=(num_classes + 1) ** 2)
    return conf.reshape(num_classes + 1, num_classes + 1), invalid


def mask_boundary(label_map: torch.Tensor, dilation_ratio: float = 0.02) -> torch.Tensor:
    """Boundary band of an (H, W) label map: the map minus its grey-level erosion.

    The erosion is a min filter over a square of radius ``round(ratio * diagonal)`` with zeros
    outside the image, the definition used by Detectron2's boundary IoU.
    """
    height, width = label_map.shape
    radius = max(1, int(round(dilation_ratio * (height**2 + width**2) ** 0.5)))
    values = label_map.float()[None, None]
    padded = F.pad(values, (radius,) * 4, value=0.0)
    eroded = -F.max_pool2d(-padded, kernel_size=2 * radius + 1, stride=1)
    return (values - eroded)[0, 0].long()


def segmentation_metrics(conf: torch.Tensor, class_names: Sequence[str], convention: str):
    """mIoU, fwIoU, per-class IoU, mACC, pACC and per-class ACC (×100) from a (C+1)² matrix.

    ``convention="detectron2"`` leaves classes without ground-truth pixels out of the means;
    ``"mmseg"`` counts such a class as IoU 0 when it is predicted (absent from both: left out).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"Unknown metric convention '{convention}'; use one of {CONVENTIONS}.")
    # float64 numpy with Detectron2's order of operations, so its numbers are matched bit for bit.
    conf = conf.cpu().numpy()[:-1, :-1].astype(np.float64)
    tp = conf.diagonal()
    gt_pixels = conf.sum(axis=0)
    pred_pixels = conf.sum(axis=1)
    union = gt_pixels + pred_pixels - tp
    has_gt = gt_pixels > 0
    iou_valid = (has_gt if convention == "detectron2" else np.ones_like(has_gt)) & (union > 0)
    acc = np.full(len(tp), np.nan)
    iou = np.full(len(tp), np.nan)
    acc[has_gt] = tp[has_gt] / gt_pixels[has_gt]
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    class_weights = gt_pixels / np.sum(gt_pixels)

    res = OrderedDict()
    res["mIoU"] = 100 * (np.sum(iou[iou_valid]) / np.sum(iou_valid))
    res["fwIoU"] = 100 * np.sum(iou[iou_valid] * class_weights[iou_valid])
    for name, value in zip(class_names, iou):
        res[f"IoU-{name}"] = 100 * value
    res["mACC"] = 100 * (np.sum(acc[has_gt]) / np.sum(has_gt))
    res["pACC"] = 100 * (np.sum(tp) / np.sum(gt_pixels))
    for name, value in zip(class_names, acc):
        res[f"ACC-{name}"] = 100 * value
    return OrderedDict((key, float(value)) for key, value in res.items())
