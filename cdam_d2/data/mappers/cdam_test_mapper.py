"""Test-time mapper of CDAM: read the image and apply the released resize rule (spec §1.1)."""
import copy

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils

from ..image_io import read_image_checked
from ..transforms.cdam_resize import resize_image


class CDAMTestMapper:
    """Dataset dict -> model input: ``image`` uint8 CHW (INPUT.FORMAT) resized to short side MIN_SIZE_TEST
    (long side <= MAX_SIZE_TEST, round-half-up, OpenCV INTER_LINEAR); ``height``/``width`` = original size.
    Ground truth is not read (the evaluator reads it at the original size)."""

    @configurable
    def __init__(self, *, image_format: str = "RGB", short_side: int = 448, long_side: int = 2048):
        self.image_format = image_format
        self.short_side = short_side
        self.long_side = long_side

    @classmethod
    def from_config(cls, cfg, is_train: bool = False):
        if is_train:
            raise ValueError("CDAMTestMapper is for evaluation only: CDAM is training-free")
        min_size = cfg.INPUT.MIN_SIZE_TEST
        return {"image_format": cfg.INPUT.FORMAT, "short_side": int(min_size), "long_side": cfg.INPUT.MAX_SIZE_TEST}

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        image = read_image_checked(record, format=self.image_format)
        utils.check_image_size(record, image)
        record["height"], record["width"] = image.shape[:2]
        resized = resize_image(image, self.short_side, self.long_side)
        record["image"] = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return record
