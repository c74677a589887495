"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth 2020), as SCLIP and NACLIP apply it to dense CLIP
logits after the window merge (off in CDAM's release, 10 steps with dilations (8, 16) in NACLIP's).

Each pixel's scores become a weighted mean of its 8 neighbours at every dilation, repeated ``steps`` times. The
weights come from the guiding image: a softmax over the neighbours of -|x_p - x_n| / (0.1 * sigma_p), averaged
over the image channels, where sigma_p is the (unbiased) standard deviation of the pixel and its neighbours
at all dilations. Borders are replicated. Scores therefore spread within regions of similar colour and stop at
image edges.

Shapes: B images, C image channels, K score maps, H x W pixels, P = 8 neighbours x number of dilations.
"""
from typing import Iterator, Sequence, Tuple

import torch
import torch.nn.functional as F

STD_SCALE = 0.1
STD_EPS = 1e-8


def _neighbour_offsets(dilation: int) -> Iterator[Tuple[int, int]]:
    for dy in (-dilation, 0, dilation):
        for dx in (-dilation, 0, dilation):
            if dy or dx:
                yield dy, dx


def _neighbours(maps: torch.Tensor, dilations: Sequence[int]) -> Iterator[torch.Tensor]:
    """(B, K, H, W) -> the (B, K, H, W) maps shifted to each neighbour (replicated borders), P of them."""
    height, width = maps.shape[-2:]
    for dilation in dilations:
        padded = F.pad(maps, [dilation] * 4, mode="replicate")
        for dy, dx in _neighbour_offsets(dilation):
            yield padded[..., dilation + dy:dilation + dy + height, dilation + dx:dilation + dx + width]


def neighbour_affinities(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """(B, C, H, W) guiding image -> (B, P, H, W) weights over each pixel's neighbours (sum 1 over P)."""
    neighbours = torch.stack(list(_neighbours(image, dilations)), dim=2)  # (B, C, P, H, W)
    # sigma over the pixel and its neighbours, the pixel counted once per dilation
    window = torch.cat([neighbours, image[:, :, None].expand(-1, -1, len(dilations), -1, -1)], dim=2)
    sigma = window.std(dim=2, keepdim=True)
    logits = -(neighbours - image[:, :, None]).abs() / (STD_EPS + STD_SCALE * sigma)
    return torch.softmax(logits.mean(dim=1), dim=1)


def refine_masks(image: torch.Tensor, masks: torch.Tensor, steps: int,
                 dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """PAMR of score maps guided by an image of the same size.

    Args:
        image: (B, C, H, W) guiding image (CDAM: the normalized input image resized to the output size).
        masks: (B, K, H, W) score maps (CDAM: merged cosine logits at the output size).
        steps: refinement iterations; 0 returns ``masks`` itself.
        dilations: neighbour distances in pixels.
    Returns:
        (B, K, H, W) refined maps (each step a convex combination of neighbours' values).
    """
    if steps <= 0:
        return masks
    if image.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"PAMR: image {tuple(image.shape[-2:])} and masks {tuple(masks.shape[-2:])} differ in size")
    weights = neighbour_affinities(image.to(masks.dtype), dilations)
    for _ in range(steps):
        refined = torch.zeros_like(masks)
        for index, shifted in enumerate(_neighbours(masks, dilations)):
            refined.addcmul_(shifted, weights[:, index:index + 1])
        masks = refined
    return masks
