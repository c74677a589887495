"""ClusterCAM dataset mapper: the release's PIL augmentation for training, unresized images for test."""
import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from PIL import Image

from ..data.image_io import read_image_checked
from .augmentation import build_train_transform

__all__ = ["ClusterCAMDatasetMapper"]


class ClusterCAMDatasetMapper:
    """Maps a dataset record to the model input.

    Output ``image``: uint8 (3, H, W) RGB. Training: a (SIZE, SIZE) crop after RandomResizedCrop,
    horizontal flip and RandAugment; normalisation and RandomErasing happen in the model.
    ``image_labels`` (required) is passed through. Test: the image at its original size (no resize,
    no padding: the patch grid and clustering depend on the exact size).
    ``height``/``width`` are always the original size. Ground truth is never read.
    """

    @configurable
    def __init__(self, is_train=True, *, image_format="RGB", train_transform=None):
        if is_train and train_transform is None:
            raise ValueError("ClusterCAMDatasetMapper(is_train=True) needs a train_transform")
        self.is_train = is_train
        self.image_format = image_format
        self.train_transform = train_transform

    @classmethod
    def from_config(cls, cfg, is_train=True):
        inp = cfg.MODEL.CLUSTERCAM.INPUT
        transform = None
        if is_train:
            transform = build_train_transform(inp.SIZE, inp.CROP_SCALE, inp.HFLIP_PROB, inp.AUTO_AUGMENT,
                                              inp.INTERPOLATION, inp.POSTERIZE_ZERO_BITS)
        return {"is_train": is_train, "image_format": cfg.INPUT.FORMAT, "train_transform": transform}

    def __call__(self, dataset_dict):
        record = copy.deepcopy(dataset_dict)
        image = read_image_checked(record, format=self.image_format)
        utils.check_image_size(record, image)
        record.setdefault("height", image.shape[0])
        record.setdefault("width", image.shape[1])
        if self.is_train:
            if "image_labels" not in record:
                raise KeyError(f"training record {record['file_name']} has no 'image_labels'; ClusterCAM "
                               "trains from image-level labels only")
            image = self.train_transform(Image.fromarray(image))
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return record
