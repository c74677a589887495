"""What one patch attends to: the CDAM map's row of a patch next to the base's own attention of it (for
pictures: ``tools/visualize.py``, the web demo). Plain torch.

A point of the (resized) image lies in one or more sliding windows (the segmentor's, padding included:
``CDAMSegmentor.window_layout``); the one whose centre is nearest is used, and the patch is the window's
grid cell under the point (border pixels past the last full patch belong to the last patch).
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

from .segmentor import CDAMSegmentor, TextQueries
from .sliding_window import NO_PADDING, Box, Padding, crop_windows

__all__ = ["PatchAttention", "locate_patch", "patch_attention"]


@dataclass
class PatchAttention:
    """Attributes:
        box: (y1, y2, x1, x2) the window in the resized image.
        padding: (left, right, top, bottom) pixels the window was zero-padded by (the grid covers the padded
            window).
        patch: (row, column) of the patch in the window's grid.
        cdam: (g_h, g_w) the CDAM map's row of the patch (its weights over the window's patches).
        base: (g_h, g_w) the base's last-block attention of the patch (head mean).
    """

    box: Box
    padding: Padding
    patch: Tuple[int, int]
    cdam: torch.Tensor
    base: torch.Tensor


def locate_patch(boxes: Sequence[Box], grid: Tuple[int, int], patch_size: Tuple[int, int],
                 point: Tuple[float, float], padding: Padding = NO_PADDING) -> Tuple[int, Tuple[int, int]]:
    """(index of the window, (row, column) of the patch) under ``point`` = (y, x) in resized-image pixels.

    Of the windows holding the point, the one whose centre is nearest; the patch is that of the window padded
    by ``padding`` = (left, right, top, bottom), clamped to the ``grid`` of the padded window.
    """
    y, x = point
    holding = [i for i, (y1, y2, x1, x2) in enumerate(boxes) if y1 <= y < y2 and x1 <= x < x2]
    if not holding:
        raise ValueError(f"point (x={x}, y={y}) lies outside the image's windows {boxes[0]}..{boxes[-1]}")

    def distance(index):
        y1, y2, x1, x2 = boxes[index]
        return (y - (y1 + y2) / 2) ** 2 + (x - (x1 + x2) / 2) ** 2

    index = min(holding, key=distance)
    y1, _, x1, _ = boxes[index]
    left, _, top, _ = padding
    row = min((int(y - y1) + top) // patch_size[0], grid[0] - 1)
    column = min((int(x - x1) + left) // patch_size[1], grid[1] - 1)
    return index, (row, column)


@torch.no_grad()
def patch_attention(segmentor: CDAMSegmentor, image: torch.Tensor, text: TextQueries,
                    point: Tuple[float, float]) -> PatchAttention:
    """The CDAM and base attention of the patch under ``point`` = (y, x), on the window as the segmentor cuts
    it (same windows and padding as its merged logits, same autocast).

    Args:
        image: (3, H1, W1) normalized image, resized as for segmentation.
        text: the vocabulary's queries (the CDAM map's class distributions use them all, ATP words included).
    """
    boxes, padding = segmentor.window_layout(*image.shape[-2:])
    left, right, top, bottom = padding
    y1, y2, x1, x2 = boxes[0]
    grid = segmentor.encoder.grid_for(y2 - y1 + top + bottom, x2 - x1 + left + right)
    index, (row, column) = locate_patch(boxes, grid, segmentor.encoder.patch_size, point, padding)
    state, _, weights = segmentor.first_pass_and_map(crop_windows(image, [boxes[index]], padding), text,
                                                     with_map=True)
    base = segmentor.base_attention(state, text)
    patch = row * grid[1] + column
    return PatchAttention(boxes[index], padding, (row, column), weights[0, patch].float().view(grid),
                          base[0, patch].float().view(grid))
