"""``CDAMPredictor``: open-vocabulary segmentation of your own images with a CDAM config::

    from cdam_d2 import CDAMPredictor

    predictor = CDAMPredictor("configs/cdam_voc21.yaml", vocabulary="background; cat; dog, puppy")
    result = predictor("photo.jpg")     # or an (H, W, 3) uint8 array (BGR by default) or a PIL image
    result.labels                       # (H, W) int32 class indices at the original size
    predictor.set_vocabulary("background; car; bus")   # encodes "car" and "bus" only
"""
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from ..engine.predictor import SegmentationPrediction, SegmentationPredictor
from .modeling.vocabulary import parse_class_lines, parse_vocabulary_string
from .resize import resize_image

__all__ = ["CDAMPredictor", "class_names", "parse_vocabulary"]


class CDAMPredictor(SegmentationPredictor):
    """Open-vocabulary segmentation with a CDAM config.

    The vocabulary is a string (``"background; cat; dog, puppy"``: ';' separates classes, ',' synonyms whose
    best probability is the class's), a list of class strings, or None for a registered dataset's classes
    (``dataset``, default DATASETS.TEST[0]). With a background rule on (MODEL.CDAM.BACKGROUND_RULE "entropy"
    with ALPHA > 0, or "fixed"), pixels whose best probability is below the threshold go to the FIRST class, and
    the area rule (AREA_THRESHOLD > 0) never removes it: start a custom vocabulary with a background-like
    class, or pass ``opts=["MODEL.CDAM.BACKGROUND_RULE", "none"]``.
    """

    META_ARCHITECTURE = "CDAM"

    def __init__(self, config_file_or_cfg, vocabulary: Union[str, Sequence[str], None] = None, *,
                 dataset: Optional[str] = None, opts: Sequence[str] = (), input_format: str = "BGR", model=None):
        parse_vocabulary(vocabulary)  # a bad vocabulary fails before CLIP is built
        super().__init__(config_file_or_cfg, opts=opts, input_format=input_format, model=model)
        self.set_vocabulary(vocabulary, dataset=dataset)

    @property
    def queries(self):
        """The text queries of the current vocabulary (``cdam_d2.cdam.modeling.TextQueries``)."""
        return self._queries

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
        results = []
        for image in images:
            resized = resize_image(image, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            labels, probs = self.model.segment_full_size(tensor, image.shape[0], image.shape[1], self._queries,
                                                         probabilities)
            results.append(SegmentationPrediction(labels.numpy(), None if probs is None else probs.numpy(),
                                                  self.names))
        return results


def parse_vocabulary(vocabulary):
    """A vocabulary string or a list of class strings -> ``Vocabulary``; None -> None."""
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
