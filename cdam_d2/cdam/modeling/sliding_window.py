"""Sliding-window placement and merging: windows inside the image (as released), optionally zero-padded to
multiples of the patch size (ClearCLIP), or the whole image as one window; overlaps averaged on cosine
logits."""
from typing import List, Tuple

import torch
import torch.nn.functional as F

Box = Tuple[int, int, int, int]  # (y1, y2, x1, x2), end exclusive
Padding = Tuple[int, int, int, int]  # (left, right, top, bottom) pixels, the order of F.pad
NO_PADDING: Padding = (0, 0, 0, 0)


def _starts(length: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    count = max(length - crop + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + crop, length)
        spans.append((max(end - crop, 0), end))
    return spans


def check_windows(crop: int, stride: int) -> None:
    """Raise a ValueError naming the keys unless ``crop`` >= 0 and, for crop > 0, 1 <= ``stride`` <= ``crop``
    (a stride above the crop would leave pixels that no window covers)."""
    if crop < 0:
        raise ValueError(f"MODEL.CDAM.SLIDE_CROP {crop} must be >= 0 (0: the whole image as one window)")
    if crop > 0 and not 1 <= stride <= crop:
        raise ValueError(f"MODEL.CDAM.SLIDE_STRIDE {stride} must be between 1 and MODEL.CDAM.SLIDE_CROP ({crop}): "
                         "a larger stride leaves gaps between the windows")


def window_boxes(height: int, width: int, crop: int, stride: int) -> List[Box]:
    """Windows in raster order (rows outer), clipped to the image and shifted back inside (padding, if any, is
    added by :func:`crop_windows`). A side shorter than ``crop`` gives one window covering it; ``crop`` 0 gives
    the whole image as one window (the peers' ``slide_crop=0``; ``stride`` unused). All windows of an image
    have the same size."""
    check_windows(crop, stride)
    if crop == 0:
        return [(0, height, 0, width)]
    return [(y1, y2, x1, x2) for y1, y2 in _starts(height, crop, stride) for x1, x2 in _starts(width, crop, stride)]


def crop_windows(image: torch.Tensor, boxes: List[Box], padding: Padding = NO_PADDING) -> torch.Tensor:
    """(3, H, W) image -> (B, 3, h + top + bottom, w + left + right) stacked windows, zero-padded by ``padding``."""
    windows = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
    return F.pad(windows, padding) if any(padding) else windows


def patch_padding(height: int, width: int, patch_size: Tuple[int, int]) -> Padding:
    """Padding that brings a ``height`` x ``width`` window to multiples of the patch size, as ClearCLIP pads:
    half on each side, the odd pixel right / bottom. Without it the patch convolution drops the remainder."""
    extra_h, extra_w = -height % patch_size[0], -width % patch_size[1]
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2


def merge_windows(window_logits: torch.Tensor, boxes: List[Box], image_size: Tuple[int, int],
                  padding: Padding = NO_PADDING) -> torch.Tensor:
    """Average per-window patch logits over their overlaps at pixel level.

    Args:
        window_logits: (B, Q, g_h, g_w) cosine logits of the windows ``boxes``.
        image_size: (H, W) of the image the windows were cut from.
        padding: the windows' padding (``crop_windows``): logits are upsampled to the padded window and
            cropped back to the window.
    Returns:
        (Q, H, W): each window's logits bilinearly upsampled to its window size, summed, divided by the
        number of windows covering each pixel.
    """
    y1, y2, x1, x2 = boxes[0]
    left, right, top, bottom = padding
    height, width = y2 - y1, x2 - x1
    upsampled = F.interpolate(window_logits, size=(height + top + bottom, width + left + right), mode="bilinear",
                              align_corners=False)[..., top:top + height, left:left + width]
    canvas = upsampled.new_zeros(upsampled.shape[1], *image_size)
    count = upsampled.new_zeros(1, *image_size)
    for logits, (y1, y2, x1, x2) in zip(upsampled, boxes):
        canvas[:, y1:y2, x1:x2] += logits
        count[:, y1:y2, x1:x2] += 1
    return canvas / count
