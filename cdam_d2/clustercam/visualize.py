"""The ClusterCAM panel of one image: input, ground truth, pseudo-label, prediction and, per class, the
ClusterCAM and the attentions it is built from (``tools/visualize.py``, the training's TensorBoard image).

:func:`panel_tiles` returns the tiles holding the model's tensors as they are (before any colouring);
:func:`cdam_d2.engine.panels.compose` draws them.
"""
from typing import Optional, Sequence

import numpy as np
import torch

from ..engine.panels import Tile, compose

__all__ = ["panel_tiles", "draw_panel", "COLUMNS"]

COLUMNS = 4  # input, ground truth, pseudo-label, prediction; then one row of four maps per class


@torch.no_grad()
def panel_tiles(model, image: np.ndarray, classes: Sequence[int], class_names: Sequence[str],
                ground_truth: Optional[np.ndarray] = None):
    """Tiles of one image's ClusterCAM panel.

    Args:
        model: a ``ClusterCAM`` meta-architecture (its test protocol gives the prediction); its train/eval
            mode is kept, the maps are computed in eval mode.
        image: (H, W, 3) uint8 RGB at its original size.
        classes: the foreground labels (1..K) to show a row of maps for, e.g. the image-level labels.
        class_names: the K+1 names (background first).
        ground_truth: (H, W) label map, or None.

    Returns:
        list of :class:`Tile`: "input", "ground truth" (if given), "pseudo-label" ((H, W) uint8 with 255 =
        ignore, from the image-level ``classes``), "prediction" ((H, W) labels of the decoder); then for each
        class c: "ClusterCAM" ((H, W) normalised multi-scale CAM), "patch-to-class attention",
        "cluster-to-class attention" and "mixed attention (CAM weight)" ((Hp, Wp) head means summed over the
        CAM's last blocks, ``ClusterCAMNet.attention_maps``), drawn over the image.
    """
    height, width = image.shape[:2]
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    normalized = model.normalize(tensor)[None]
    labels = model.multi_hot_labels([{"image_labels": list(classes)}])
    was_training = model.training
    model.eval()
    try:
        cams = model.class_activation_maps(normalized, labels, train_mode=False)
        pseudo = model.refine_pseudo_labels(normalized, labels, cams)[0]
        attention = model.net.attention_maps(normalized)
        scores = model.inference([{"image": tensor, "height": height, "width": width}])[0]["sem_seg"]
    finally:
        model.train(was_training)
    tiles = [Tile("input", image)]
    if ground_truth is not None:
        tiles.append(Tile("ground truth", np.asarray(ground_truth)))
    tiles.append(Tile("pseudo-label", pseudo.to(torch.uint8).cpu().numpy()))
    tiles.append(Tile("prediction", scores.argmax(dim=0).to(torch.uint8).cpu().numpy()))
    maps = (("ClusterCAM", cams[0]), ("patch-to-class attention", attention["patch_to_class"][0]),
            ("cluster-to-class attention", attention["cluster_to_class"][0]),
            ("mixed attention (CAM weight)", attention["mixed"][0]))
    for label in classes:
        for position, (what, values) in enumerate(maps):
            tiles.append(Tile(f"{what}: {class_names[label]}", values[label - 1].float().cpu().numpy(),
                              background=image, new_row=position == 0))
    return tiles


def draw_panel(model, image, classes, class_names, ground_truth=None, tile_height=240, title="") -> np.ndarray:
    """(H', W', 3) uint8 picture of :func:`panel_tiles`."""
    tiles = panel_tiles(model, image, classes, class_names, ground_truth)
    return compose(tiles, class_names, columns=COLUMNS, tile_height=tile_height, title=title)
