"""Segment your own images from Python, in the spirit of Detectron2's ``DefaultPredictor``::

    from cdam_d2 import CDAMPredictor

    predictor = CDAMPredictor("configs/cdam_voc21.yaml", vocabulary="background; cat; dog, puppy")
    result = predictor("photo.jpg")     # or an (H, W, 3) uint8 array (BGR by default) or a PIL image
    result.labels                       # (H, W) int32 class indices at the original size
    result.probabilities                # (C, H, W) float32 class probabilities at the original size
    result.names                        # the C class names
    predictor.set_vocabulary("background; car; bus")   # encodes "car" and "bus" only

``ClusterCAMPredictor`` has the same calls for ClusterCAM's fixed classes; ``build_predictor`` picks the
predictor of a config's meta-architecture.
"""
import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("BGR", "RGB")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass
class SegmentationPrediction:
    """One image's segmentation at its original size.

    Attributes:
        labels: (H, W) int32 class indices (CDAM: pixels below the background threshold are class 0).
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


def pil_to_rgb(image) -> np.ndarray:
    """A PIL image -> (H, W, 3) uint8 RGB. 16-bit greyscale is scaled to 8 bits (PIL's own conversion
    clips every value above 255 to white)."""
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise ValueError("floating-point pixels (PIL mode 'F') are not supported; save the image with 8 or 16 bits")
    return np.asarray(image.convert("RGB"))


def read_image_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file, EXIF orientation applied (16-bit greyscale scaled to
    8 bits). Raises ``OSError`` naming the file when it cannot be read."""
    from PIL import Image, ImageOps

    from ..data.image_io import DAMAGE_ERRORS

    try:
        with Image.open(path) as image:
            return pil_to_rgb(ImageOps.exif_transpose(image))
    except DAMAGE_ERRORS + (ValueError,) as error:  # ValueError: pixels pil_to_rgb refuses
        raise OSError(f"Cannot read image {path!r}: {error}") from error


def image_to_rgb(image, input_format: str = "BGR") -> np.ndarray:
    """A path, a PIL image or an (H, W[, 3|4]) uint8/uint16 array in ``input_format`` -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return read_image_rgb(os.fspath(image))
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Expected an image path, a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype == np.uint16:
        image = np.clip(np.rint(image / 257.0), 0, 255).astype(np.uint8)
    if image.dtype != np.uint8:
        raise TypeError(f"Image arrays must be uint8 (or uint16), got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"Image arrays must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1] if input_format == "BGR" else image)


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


class CDAMPredictor(SegmentationPredictor):
    """Open-vocabulary segmentation with a CDAM config.

    The vocabulary is a string (``"background; cat; dog, puppy"``: ';' separates classes, ',' synonyms whose
    best probability is the class's), a list of class strings, or None for a registered dataset's classes
    (``dataset``, default DATASETS.TEST[0]). With the background threshold on (MODEL.CDAM.ALPHA > 0), pixels
    whose best probability is below it go to the FIRST class: start a custom vocabulary with a background-like
    class, or pass ``opts=["MODEL.CDAM.ALPHA", "0.0"]``.
    """

    META_ARCHITECTURE = "CDAM"

    def __init__(self, config_file_or_cfg, vocabulary: Union[str, Sequence[str], None] = None, *,
                 dataset: Optional[str] = None, opts: Sequence[str] = (), input_format: str = "BGR", model=None):
        parse_vocabulary(vocabulary)  # a bad vocabulary fails before CLIP is built
        super().__init__(config_file_or_cfg, opts=opts, input_format=input_format, model=model)
        self.set_vocabulary(vocabulary, dataset=dataset)

    def set_vocabulary(self, vocabulary: Union[str, Sequence[str], None] = None, *,
                       dataset: Optional[str] = None) -> None:
        """Switch to a new vocabulary; only names this predictor has not embedded before are encoded."""
        parsed = parse_vocabulary(vocabulary)
        if parsed is None:
            from detectron2.data import MetadataCatalog

            dataset = dataset or (self.cfg.DATASETS.TEST[0] if len(self.cfg.DATASETS.TEST) else "")
            if not dataset:
                raise ValueError("Give a vocabulary or a dataset: the config has no DATASETS.TEST")
            self._queries = self.model.dataset_queries(dataset)  # cached per dataset by the model
            self._names = list(MetadataCatalog.get(dataset).get("stuff_classes", None)
                               or class_names(self.model.dataset_vocabulary(dataset)))
        else:
            self._queries = self.model.text_queries(parsed)
            self._names = class_names(parsed)

    @torch.no_grad()
    def _predict(self, images, probabilities):
        from ..data.transforms.cdam_resize import resize_image

        results = []
        for image in images:
            resized = resize_image(image, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            labels, probs = self.model.segment_full_size(tensor, image.shape[0], image.shape[1], self._queries,
                                                         probabilities)
            results.append(SegmentationPrediction(labels.numpy(), None if probs is None else probs.numpy(),
                                                  self.names))
        return results


class ClusterCAMPredictor(SegmentationPredictor):
    """ClusterCAM's fixed classes (background + MODEL.CLUSTERCAM.NUM_CLASSES) with the same calls as
    :class:`CDAMPredictor`. Weights come from MODEL.WEIGHTS (a cdam_d2 ClusterCAM checkpoint); class names
    from DATASETS.TEST[0] (or ``dataset``) when its class count matches."""

    META_ARCHITECTURE = "ClusterCAM"

    def __init__(self, config_file_or_cfg, vocabulary=None, *, dataset: Optional[str] = None,
                 opts: Sequence[str] = (), input_format: str = "BGR", model=None):
        if vocabulary is not None:
            raise ValueError(FIXED_CLASSES)
        super().__init__(config_file_or_cfg, opts=opts, input_format=input_format, model=model)
        if not self.cfg.MODEL.WEIGHTS:
            logger.warning("ClusterCAMPredictor: MODEL.WEIGHTS is empty, so the decoder is untrained; pass a "
                           "trained checkpoint (opts=['MODEL.WEIGHTS', 'model_final.pth']).")
        self._names = self._class_names(dataset)

    def _class_names(self, dataset):
        from detectron2.data import MetadataCatalog

        count = self.model.num_classes + 1
        dataset = dataset or (self.cfg.DATASETS.TEST[0] if len(self.cfg.DATASETS.TEST) else "")
        classes = MetadataCatalog.get(dataset).get("stuff_classes", None) if dataset else None
        if classes is not None and len(classes) == count:
            return list(classes)
        return ["background"] + [f"class {index}" for index in range(1, count)]

    def set_vocabulary(self, vocabulary=None, *, dataset=None) -> None:
        raise ValueError(FIXED_CLASSES)

    @torch.no_grad()
    def _predict(self, images, probabilities):
        records = [{"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                    "height": image.shape[0], "width": image.shape[1]} for image in images]
        results = []
        for output in self.model(records):  # one call: the dense CRFs of a batch run in parallel
            probs = output["sem_seg"].float()
            results.append(SegmentationPrediction(probs.argmax(0).to(torch.int32).cpu().numpy(),
                                                  probs.cpu().numpy() if probabilities else None, self.names))
        return results


FIXED_CLASSES = ("ClusterCAM predicts the fixed classes it was trained on (background + "
                 "MODEL.CLUSTERCAM.NUM_CLASSES); it takes no vocabulary")
PREDICTORS = {CDAMPredictor.META_ARCHITECTURE: CDAMPredictor,
              ClusterCAMPredictor.META_ARCHITECTURE: ClusterCAMPredictor}


def build_predictor(config_file_or_cfg, vocabulary=None, *, opts: Sequence[str] = (), **kwargs) -> SegmentationPredictor:
    """The predictor of a config's meta-architecture (``CDAM`` or ``ClusterCAM``)."""
    cfg = load_predictor_cfg(config_file_or_cfg, opts)
    predictor = PREDICTORS.get(cfg.MODEL.META_ARCHITECTURE)
    if predictor is None:
        raise ValueError(f"No predictor for MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} "
                         f"(available: {sorted(PREDICTORS)})")
    return predictor(cfg, vocabulary, **kwargs)


def parse_vocabulary(vocabulary):
    """A vocabulary string or a list of class strings -> ``Vocabulary``; None -> None."""
    from ..modeling.cdam.vocabulary import parse_class_lines, parse_vocabulary_string

    if vocabulary is None:
        return None
    if isinstance(vocabulary, str):
        return parse_vocabulary_string(vocabulary)
    return parse_class_lines(list(vocabulary), source=f"vocabulary {list(vocabulary)!r}")


def class_names(vocabulary) -> List[str]:
    """Display name of each class: its first synonym."""
    first = {}
    for name, class_index in zip(vocabulary.queries, vocabulary.query_to_class):
        first.setdefault(class_index, name)
    return [first[index] for index in range(vocabulary.num_classes)]
