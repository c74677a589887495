"""Test-time segmentation from the decoder (never from the CAMs), at the original resolution."""
import warnings

import torch
from torch.nn import functional as F

__all__ = ["multiscale_segmentation_probs"]


def multiscale_segmentation_probs(net, image, scales=(0.5, 0.75, 1.0, 1.25, 1.5)):
    """Element-wise max over scales of the decoder softmax, at the input resolution.

    Each scale resizes with align_corners=True (the release's test-time quirk), runs the normal
    forward, upsamples the (K+1, ⌊h/16⌋, ⌊w/16⌋) logits with align_corners=False and takes the
    softmax. No flip. Scales whose image is smaller than one patch are skipped.

    Args:
        net: a ``ClusterCAMNet`` (in eval mode for the official protocol).
        image: (1, 3, H, W) normalised.

    Returns:
        (K+1, H, W) float32 in [0, 1]; not renormalised (a pixel's sum lies in [1, len(scales)]).
    """
    height, width = image.shape[-2:]
    probs = None
    for scale in scales:
        size = (int(height * scale), int(width * scale))
        if min(size) < net.patch_size:
            warnings.warn(f"test scale {scale} turns a {height}x{width} image into {size}, smaller than a "
                          f"patch: that scale is left out of the fused prediction")
            continue
        scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=True)
        _, _, segs = net(scaled)
        segs = F.interpolate(segs.float(), size=(height, width), mode="bilinear", align_corners=False)
        scale_probs = segs.softmax(dim=1)[0]
        probs = scale_probs if probs is None else torch.maximum(probs, scale_probs)
    if probs is None:
        raise ValueError(f"image of size {(height, width)} is smaller than one {net.patch_size}px patch "
                         f"at every test scale {tuple(scales)}")
    return probs
