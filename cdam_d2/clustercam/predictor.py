"""``ClusterCAMPredictor``: a trained ClusterCAM on your own images, with the calls of the other predictors."""
import logging
from typing import Optional, Sequence

import numpy as np
import torch

from ..engine.predictor import SegmentationPrediction, SegmentationPredictor

__all__ = ["ClusterCAMPredictor"]

logger = logging.getLogger(__name__)

FIXED_CLASSES = ("ClusterCAM predicts the fixed classes it was trained on (background + "
                 "MODEL.CLUSTERCAM.NUM_CLASSES); it takes no vocabulary")


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
