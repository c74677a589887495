"""Segment your own images from Python, in the spirit of Detectron2's ``DefaultPredictor``::

    from cdam_d2 import build_predictor

    predictor = build_predictor("configs/<method>_<dataset>.yaml")   # the method's predictor
    result = predictor("photo.jpg")     # or an (H, W, 3) uint8 array (BGR by default) or a PIL image
    result.labels                       # (H, W) int32 class indices at the original size
    result.probabilities                # (C, H, W) float32 class probabilities at the original size
    result.names                        # the C class names

:class:`SegmentationPredictor` is the shared part; each method's predictor (named by its recipe,
:mod:`cdam_d2.engine.recipe`) turns decoded RGB images into :class:`SegmentationPrediction`.
"""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..data.image_io import INPUT_FORMATS, image_to_rgb

logger = logging.getLogger(__name__)



@dataclass
class SegmentationPrediction:
    """One image's segmentation at its original size.

    Attributes:
        labels: (H, W) int32 class indices (with a background threshold, pixels below it are class 0).
        probabilities: (C, H, W) float32 class probabilities, or None when not requested.
        names: the C class names, index = label.
    """

    labels: np.ndarray
    probabilities: Optional[np.ndarray]
    names: List[str]

    def area_fractions(self) -> np.ndarray:
        """(C,) fraction of the image's pixels given to each class."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.names))
        return counts / max(1, self.labels.size)


def load_predictor_cfg(config_file_or_cfg, opts: Sequence[str] = (), allow_unsafe_yaml: bool = False):
    """A frozen config from a file (with CPU fallback, like tools/train_net.py; Python YAML tags only with
    ``allow_unsafe_yaml``) or a copy of a CfgNode."""
    from detectron2.config import CfgNode

    from .cli import load_cfg

    if isinstance(config_file_or_cfg, CfgNode):
        cfg = config_file_or_cfg.clone()
        cfg.defrost()
        cfg.merge_from_list(list(opts))
    else:
        cfg, fallbacks = load_cfg(os.fspath(config_file_or_cfg), opts, allow_unsafe_yaml=allow_unsafe_yaml)
        for message in fallbacks:
            logger.warning(message)
    cfg.freeze()
    return cfg


class SegmentationPredictor:
    """Shared part of the predictors: config, model, image decoding, ``__call__`` and ``batch``."""

    META_ARCHITECTURE = ""

    def __init__(self, config_file_or_cfg, *, opts: Sequence[str] = (), input_format: str = "BGR", model=None):
        """
        Args:
            config_file_or_cfg: a config file path or a Detectron2 CfgNode (with cdam_d2's keys).
            opts: config overrides, KEY VALUE pairs.
            input_format: channel order of numpy images, "BGR" (like ``cv2.imread`` and Detectron2's
                ``DefaultPredictor``) or "RGB". Paths and PIL images are always decoded correctly.
            model: an already built model of this config (shares it instead of building a new one).
        """
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format {input_format!r} is not one of {INPUT_FORMATS}")
        self.cfg = load_predictor_cfg(config_file_or_cfg, opts)
        if self.cfg.MODEL.META_ARCHITECTURE != self.META_ARCHITECTURE:
            raise ValueError(f"{type(self).__name__} needs a {self.META_ARCHITECTURE} config, got "
                             f"MODEL.META_ARCHITECTURE {self.cfg.MODEL.META_ARCHITECTURE!r} (use build_predictor)")
        self.input_format = input_format
        self.model = model if model is not None else self._build_model()

    def _build_model(self):
        from detectron2.modeling import build_model

        from .checkpoint import CoveringCheckpointer

        model = build_model(self.cfg).eval()
        if self.cfg.MODEL.WEIGHTS:
            CoveringCheckpointer.from_cfg(model, self.cfg).load(self.cfg.MODEL.WEIGHTS)
        return model

    @property
    def names(self) -> List[str]:
        """The class names, index = label."""
        return list(self._names)

    def __call__(self, image, probabilities: bool = True) -> SegmentationPrediction:
        """Segment one image (path, PIL image or numpy array in ``input_format``)."""
        return self.batch([image], probabilities)[0]

    def batch(self, images: Sequence, probabilities: bool = True) -> List[SegmentationPrediction]:
        """Segment several images; the results equal one call per image."""
        rgb = [image_to_rgb(image, self.input_format) for image in images]
        return self._predict(rgb, probabilities)

    def _predict(self, images: List[np.ndarray], probabilities: bool) -> List[SegmentationPrediction]:
        raise NotImplementedError


def build_predictor(config_file_or_cfg, vocabulary=None, *, opts: Sequence[str] = (), **kwargs) -> SegmentationPredictor:
    """The predictor of a config's meta-architecture, as its recipe names it."""
    from .recipe import recipe_of

    cfg = load_predictor_cfg(config_file_or_cfg, opts)
    predictor = recipe_of(cfg).predictor
    if predictor is None:
        raise ValueError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} has no predictor: its recipe "
                         "names none (cdam_d2.engine.recipe.Recipe.predictor)")
    return predictor(cfg, vocabulary, **kwargs)
