"""Training augmentation of the release (spec §2.1), built from timm's ImageNet train pipeline.

The PIL stages (RandomResizedCrop, flip, RandAugment) run in the data mapper and yield uint8 RGB;
normalisation and RandomErasing (which works in normalised space) run in the model, on the batch.
"""
import numpy as np
import torch

__all__ = ["build_train_transform", "random_erasing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(size=448, crop_scale=(0.08, 1.0), hflip_prob=0.5,
                          auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic"):
    """Returns a callable: PIL RGB image -> (size, size, 3) uint8 array.

    Same arguments as the release's ``create_transform(is_training=True)``; colour jitter is off
    because timm disables it whenever RandAugment is on. The RandAugment fill colour is derived from
    the ImageNet mean, (124, 116, 104).
    """
    from timm.data.transforms_factory import transforms_imagenet_train
    from torchvision import transforms

    primary, secondary, _ = transforms_imagenet_train(
        img_size=size, scale=tuple(crop_scale), hflip=hflip_prob, color_jitter=None,
        auto_augment=auto_augment or None, interpolation=interpolation,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, separate=True)
    pil_pipeline = transforms.Compose([primary, secondary])

    def transform(image):
        return np.asarray(pil_pipeline(image.convert("RGB")), dtype=np.uint8)

    return transform


def random_erasing(images, probability=0.25):
    """timm RandomErasing (mode "pixel", 1 box, area 2-33%, aspect 0.3-3.3, N(0,1) fill) on each
    image of a normalised (B, 3, H, W) batch with the given probability. Returns a new tensor."""
    from timm.data.random_erasing import RandomErasing

    if probability <= 0:
        return images
    eraser = RandomErasing(probability=probability, mode="pixel", max_count=1, device=images.device)
    with torch.no_grad():
        return eraser(images.clone())
