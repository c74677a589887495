"""Sliding-window placement and merging, as released: no padding, overlaps averaged on cosine logits."""
from typing import List, Tuple

import torch
import torch.nn.functional as F

Box = Tuple[int, int, int, int]  # (y1, y2, x1, x2), end exclusive


def _starts(length: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    count = max(length - crop + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + crop, length)
        spans.append((max(end - crop, 0), end))
    return spans


def window_boxes(height: int, width: int, crop: int, stride: int) -> List[Box]:
    """Windows in raster order (rows outer), clipped to the image and shifted back inside; no padding.
    A side shorter than ``crop`` gives one window covering it. All windows of an image have the same size."""
    if crop < 1 or stride < 1:
        raise ValueError(f"MODEL.CDAM.SLIDE_CROP ({crop}) and SLIDE_STRIDE ({stride}) must be positive")
    return [(y1, y2, x1, x2) for y1, y2 in _starts(height, crop, stride) for x1, x2 in _starts(width, crop, stride)]


def crop_windows(image: torch.Tensor, boxes: List[Box]) -> torch.Tensor:
    """(3, H, W) image -> (B, 3, h, w) stacked windows."""
    return torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])


def merge_windows(window_logits: torch.Tensor, boxes: List[Box], image_size: Tuple[int, int]) -> torch.Tensor:
    """Average per-window patch logits over their overlaps at pixel level.

    Args:
        window_logits: (B, Q, g_h, g_w) cosine logits of the windows ``boxes``.
        image_size: (H, W) of the image the windows were cut from.
    Returns:
        (Q, H, W): each window's logits bilinearly upsampled to its window size, summed, divided by the
        number of windows covering each pixel.
    """
    y1, y2, x1, x2 = boxes[0]
    upsampled = F.interpolate(window_logits, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
    canvas = upsampled.new_zeros(upsampled.shape[1], *image_size)
    count = upsampled.new_zeros(1, *image_size)
    for logits, (y1, y2, x1, x2) in zip(upsampled, boxes):
        canvas[:, y1:y2, x1:x2] += logits
        count[:, y1:y2, x1:x2] += 1
    return canvas / count
