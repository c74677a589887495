"""Per-image post-processing: probabilities, synonyms, the background rules and the area rule.

Background rules (pixels whose best class probability is below a threshold get class 0):
"entropy": CDAM's threshold from the windows' patch entropies; "fixed": one given threshold (the peers'
``prob_thd``); "none": no background assignment.
"""
import math
from typing import Sequence

import torch

THRESHOLD_SOURCES = ("last_window", "image")
BACKGROUND_RULES = ("entropy", "fixed", "none")


def patch_entropy_bits(patch_logits: torch.Tensor, entropy_scale: float) -> torch.Tensor:
    """(B, Q, N) fp32 cosine logits -> (B, N) entropy in bits of softmax(scale * logits) over queries (xlogy)."""
    probs = torch.softmax(entropy_scale * patch_logits, dim=1)
    return -torch.special.xlogy(probs, probs).sum(dim=1) / math.log(2.0)


def background_threshold(entropy: torch.Tensor, alpha: float, threshold_default: float,
                         source: str = "last_window") -> float:
    """thr = alpha * theta / H_center with H_center = (min H + max H) / 2, the midpoint of the range, not a mean.

    Args:
        entropy: (B, N) patch entropies of the image's windows, in raster order.
        source: "last_window" (released: the bottom-right window's H_center) or "image" (all windows' patches).
    Returns:
        The threshold; 0 when ``alpha`` is 0 (disabled); +inf when H_center <= 0 (every pixel -> background).
    """
    if source not in THRESHOLD_SOURCES:
        raise ValueError(f"MODEL.CDAM.THRESHOLD_SOURCE {source!r} is not one of {THRESHOLD_SOURCES}")
    if alpha == 0:
        return 0.0
    values = entropy[-1] if source == "last_window" else entropy
    center = 0.5 * (values.min().item() + values.max().item())
    return math.inf if center <= 0 else alpha * threshold_default / center


def class_probabilities(logits: torch.Tensor, query_to_class: Sequence[int], num_classes: int,
                        logit_scale: float) -> torch.Tensor:
    """(Q, H, W) merged cosine logits -> (C, H, W) class probabilities: softmax over queries of
    ``logit_scale * logits``, then the max over each class's synonyms."""
    probs = torch.softmax(logit_scale * logits, dim=0)
    if len(query_to_class) == num_classes:
        return probs
    index = torch.as_tensor(query_to_class, device=probs.device).view(-1, 1, 1).expand_as(probs)
    out = probs.new_zeros(num_classes, *probs.shape[1:])
    return out.scatter_reduce_(0, index, probs, reduce="amax", include_self=False)


def encode_background(probs: torch.Tensor, threshold: float, background_index: int = 0) -> torch.Tensor:
    """Scores whose argmax is the thresholded label map: where the max class probability is below
    ``threshold`` the background channel is raised by 1 (probabilities are <= 1), elsewhere unchanged.

    Args:
        probs: (C, H, W) class probabilities.
    Returns:
        (C, H, W) scores.
    """
    below = probs.amax(dim=0) < threshold
    scores = probs.clone()
    scores[background_index] += below.to(scores.dtype)
    return scores


def predicted_areas(probs: torch.Tensor) -> torch.Tensor:
    """(C, H, W) class probabilities -> (C,) int64 number of pixels whose argmax is each class."""
    return torch.bincount(probs.argmax(dim=0).flatten(), minlength=probs.shape[0])


def kept_classes(areas: torch.Tensor, area_threshold: float) -> torch.Tensor:
    """SCLIP's area rule: (C,) predicted areas -> (C,) bool, False for each foreground class (index >= 1)
    whose area is not above ``area_threshold`` times the foreground area (all classes >= 1); class 0 is kept.
    The comparison runs in float32 like SCLIP's (one-hot sums in the probabilities' dtype)."""
    foreground = areas[1:].to(torch.float32)
    return torch.cat([areas.new_ones(1, dtype=torch.bool), foreground > area_threshold * foreground.sum()])


def remove_classes(probs: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(C, H, W) probabilities with the classes not ``kept`` (C,) set to 0 (the labels are then argmaxed again)."""
    return probs * kept.to(probs.dtype).view(-1, 1, 1)
