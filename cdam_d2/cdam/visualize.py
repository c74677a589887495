"""The CDAM panel of one image: what the base predicts from its patch logits, what CDAM predicts, and, for
one chosen patch, the CDAM attention map next to the base's own attention (``tools/visualize.py``, the web
demo's click).

:func:`panel_tiles` returns the tiles holding the model's tensors as they are (before any colouring);
:func:`cdam_d2.engine.panels.compose` draws them.
"""
import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.panels import Tile, compose
from .modeling.patch_attention import PatchAttention, patch_attention
from .modeling.postprocess import class_probabilities
from .modeling.segmentor import TextQueries
from .resize import resize_image

__all__ = ["ImagePatchAttention", "image_patch_attention", "attention_tiles", "panel_tiles", "draw_panel", "COLUMNS"]

COLUMNS = 4


@contextlib.contextmanager
def _base_only(segmentor):
    saved = segmentor.use_cdam
    segmentor.use_cdam = False
    try:
        yield segmentor
    finally:
        segmentor.use_cdam = saved


@dataclass
class ImagePatchAttention:
    """The patch attention of a point of an original-size image (see :func:`image_patch_attention`).

    Attributes:
        attention: the :class:`~cdam_d2.cdam.modeling.patch_attention.PatchAttention` (resized-image windows).
        window: (h + top + bottom, w + left + right, 3) uint8 crop of the resized image under the window,
            padded with black as the window is (``attention.padding``), so that the maps' grid lies on it: the
            pictures' background.
        point: (x, y) in the original image's pixels.
    """

    attention: PatchAttention
    window: np.ndarray
    point: Tuple[int, int]


@torch.no_grad()
def image_patch_attention(model, image: np.ndarray, queries: TextQueries, point: Tuple[int, int],
                          short_side: int, long_side: int) -> ImagePatchAttention:
    """CDAM and base attention of the patch under ``point`` = (x, y) of an (H, W, 3) uint8 RGB ``image``,
    resized as the model's test input (``short_side``, ``long_side``: INPUT.MIN/MAX_SIZE_TEST)."""
    height, width = image.shape[:2]
    x, y = point
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"--patch {x},{y} lies outside the {width}x{height} image (x in [0, {width}), "
                         f"y in [0, {height}))")
    resized = resize_image(image, short_side, long_side)
    scale_y, scale_x = resized.shape[0] / height, resized.shape[1] / width
    normalized = model.normalize(torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))))
    attention = patch_attention(model.segmentor, normalized, queries, ((y + 0.5) * scale_y, (x + 0.5) * scale_x))
    y1, y2, x1, x2 = attention.box
    left, right, top, bottom = attention.padding
    window = np.pad(resized[y1:y2, x1:x2], ((top, bottom), (left, right), (0, 0)))
    return ImagePatchAttention(attention, window, (x, y))


def attention_tiles(found: ImagePatchAttention, base: str):
    """Two tiles: the CDAM attention and the base's attention of the patch, over its window."""
    x, y = found.point
    attention = found.attention
    return [Tile(f"CDAM attention of patch ({x}, {y})", attention.cdam.cpu().numpy(), found.window,
                 attention.patch, new_row=True),
            Tile(f"{base} attention of patch ({x}, {y})", attention.base.cpu().numpy(), found.window,
                 attention.patch)]


@torch.no_grad()
def panel_tiles(model, image: np.ndarray, queries: TextQueries, point: Tuple[int, int], short_side: int,
                long_side: int, ground_truth: Optional[np.ndarray] = None):
    """Tiles of one image's CDAM panel.

    Args:
        model: a ``CDAM`` meta-architecture; queries: its text queries of the vocabulary.
        image: (H, W, 3) uint8 RGB at its original size; point: (x, y) of the patch to inspect, in its pixels.
        short_side, long_side: the test resize (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST).
        ground_truth: (H, W) label map, or None.

    Returns:
        list of :class:`Tile`: "input", "ground truth" (if given), "base patch logits (argmax)" ((H, W) arg-max
        over classes of the base's window-merged patch logits, no background threshold), "prediction" ((H, W)
        CDAM's labels), then "CDAM attention of patch (x, y)" and "<base> attention of patch (x, y)"
        ((g_h, g_w) rows of the window's maps, over the window).
    """
    height, width = image.shape[:2]
    resized = resize_image(image, short_side, long_side)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    segmentor = model.segmentor
    with _base_only(segmentor):
        merged, _ = segmentor.merged_logits(model.normalize(tensor), queries)
    logits = F.interpolate(merged[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    base_labels = class_probabilities(logits, queries.query_to_class, queries.num_classes, segmentor.logit_scale)
    prediction = model.segment(tensor, height, width, queries).argmax(dim=0)
    tiles = [Tile("input", image)]
    if ground_truth is not None:
        tiles.append(Tile("ground truth", np.asarray(ground_truth)))
    tiles.append(Tile("base patch logits (argmax)", base_labels.argmax(dim=0).cpu().numpy()))
    tiles.append(Tile("prediction", prediction.cpu().numpy()))
    found = image_patch_attention(model, image, queries, point, short_side, long_side)
    return tiles + attention_tiles(found, model.segmentor.encoder.base)


def draw_panel(model, image, queries, point, short_side, long_side, class_names: Sequence[str],
               ground_truth=None, tile_height=240, title="") -> np.ndarray:
    """(H', W', 3) uint8 picture of :func:`panel_tiles`."""
    tiles = panel_tiles(model, image, queries, point, short_side, long_side, ground_truth)
    return compose(tiles, class_names, columns=COLUMNS, tile_height=tile_height, title=title)
