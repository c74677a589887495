"""Training augmentation of the release (448 RandomResizedCrop, flip, RandAugment ``rand-m9-mstd0.5-inc1``,
RandomErasing with p 0.25), built from timm's ImageNet train pipeline.

The PIL stages (RandomResizedCrop, flip, RandAugment) run in the data mapper and yield uint8 RGB;
normalisation and RandomErasing (which works in normalised space) run in the model, on the batch.
"""
import functools

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["build_train_transform", "random_erasing", "posterize_in_range", "keep_posterize_in_range"]

ZERO_BIT_CHOICES = ("black", "one_bit")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def posterize_in_range(image, bits_to_keep, zero_bits="black", **_):
    """timm's posterize op with the bit count kept in Pillow's range [1, 8].

    ``rand-m9-mstd0.5-inc1`` draws the magnitude from N(9, 0.5) clipped to [0, 10]; PosterizeIncreasing
    keeps ``4 - int(0.4 m)`` bits, so m = 10 (about 2% of the draws) asks for 0 bits, which recent Pillow (13)
    rejects. ``zero_bits`` "black" returns what Pillow 10.2 (the release's version) returned for 0
    bits, an all-black image (its mask kept no bit); "one_bit" keeps one bit instead.
    """
    if bits_to_keep >= 8:
        return image
    if bits_to_keep < 1:
        if zero_bits == "black":
            return Image.new(image.mode, image.size)
        bits_to_keep = 1
    return ImageOps.posterize(image, bits_to_keep)


def keep_posterize_in_range(transform, zero_bits="black"):
    """Replace the posterize function of every op of timm's RandAugment / AutoAugment / AugMix in
    ``transform`` (a torchvision ``Compose``, a list, or the augment itself) by ``posterize_in_range``.

    Only the function is swapped: the choice of ops, the magnitude noise and the random numbers drawn
    stay those of timm. Returns the number of ops changed.
    """
    from timm.data import auto_augment

    if zero_bits not in ZERO_BIT_CHOICES:
        raise ValueError(f"MODEL.CLUSTERCAM.INPUT.POSTERIZE_ZERO_BITS must be one of {ZERO_BIT_CHOICES}, "
                         f"got {zero_bits!r}")
    replacement = functools.partial(posterize_in_range, zero_bits=zero_bits)
    parts = getattr(transform, "transforms", transform if isinstance(transform, (list, tuple)) else [transform])
    changed = 0
    for part in parts:
        # RandAugment / AugMix hold ``ops``, AutoAugment holds a ``policy`` of sub-policies.
        ops = list(getattr(part, "ops", [])) + [op for sub in getattr(part, "policy", []) for op in sub]
        for op in ops:
            if isinstance(op, auto_augment.AugmentOp) and op.aug_fn is auto_augment.posterize:
                op.aug_fn = replacement
                changed += 1
    return changed


def build_train_transform(size=448, crop_scale=(0.08, 1.0), hflip_prob=0.5,
                          auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
                          posterize_zero_bits="black"):
    """Returns a callable: PIL RGB image -> (size, size, 3) uint8 array.

    Same arguments as the release's ``create_transform(is_training=True)``; colour jitter is off
    because timm disables it whenever RandAugment is on. The RandAugment fill colour is derived from
    the ImageNet mean, (124, 116, 104). Posterize keeps its bit count in Pillow's range
    (``posterize_in_range``; ``posterize_zero_bits`` says what 0 bits become).
    """
    from timm.data.transforms_factory import transforms_imagenet_train
    from torchvision import transforms

    primary, secondary, _ = transforms_imagenet_train(
        img_size=size, scale=tuple(crop_scale), hflip=hflip_prob, color_jitter=None,
        auto_augment=auto_augment or None, interpolation=interpolation,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, separate=True)
    keep_posterize_in_range(secondary, posterize_zero_bits)
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
