"""Test-time mapper of CDAM: read the image and apply the released resize rule (:mod:`.resize`)."""
import copy

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils

from ..data.image_io import read_image_checked
from .resize import resize_image


class CDAMTestMapper:
    """Dataset dict -> model input: ``image`` uint8 CHW (INPUT.FORMAT) resized to short side MIN_SIZE_TEST
    (long side <= MAX_SIZE_TEST, round-half-up, OpenCV INTER_LINEAR); ``height``/``width`` = original size;
    ``meta["dataset_name"]`` = ``dataset_name`` when given, so CDAM uses that dataset's vocabulary even for
    records of loaders that set no ``meta`` (Detectron2's builtin ADE20K, Cityscapes, ...).
    Ground truth is not read (the evaluator reads it at the original size)."""

    @configurable
    def __init__(self, *, image_format: str = "RGB", short_side: int = 448, long_side: int = 2048,
                 dataset_name: str = ""):
        """
        Args:
            dataset_name: the dataset whose records this mapper maps (one test loader per dataset); it
                overrides a record's own ``meta["dataset_name"]``, since that dataset's evaluator scores
                the prediction. "" leaves records as they are.
        """
        self.image_format = image_format
        self.short_side = short_side
        self.long_side = long_side
        self.dataset_name = dataset_name

    @classmethod
    def from_config(cls, cfg, is_train: bool = False, dataset_name: str = ""):
        if is_train:
            raise ValueError("CDAMTestMapper is for evaluation only: CDAM is training-free")
        min_size = cfg.INPUT.MIN_SIZE_TEST
        return {"image_format": cfg.INPUT.FORMAT, "short_side": int(min_size), "long_side": cfg.INPUT.MAX_SIZE_TEST,
                "dataset_name": dataset_name}

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        if self.dataset_name:
            record["meta"] = {**record.get("meta", {}), "dataset_name": self.dataset_name}
        image = read_image_checked(record, format=self.image_format)
        utils.check_image_size(record, image)
        record["height"], record["width"] = image.shape[:2]
        resized = resize_image(image, self.short_side, self.long_side)
        record["image"] = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return record
