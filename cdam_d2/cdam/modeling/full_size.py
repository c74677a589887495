"""Labels and class probabilities at the original image size, in bands of output rows.

Evaluation upsamples all query logits to the original size at once, (Q, H0, W0): fine for dataset
images, but a 4000x3000 photo with 60 classes would need gigabytes. Here at most ``band_elements``
upsampled logits exist at a time; only the outputs themselves are full size.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .postprocess import class_probabilities, encode_background, kept_classes, predicted_areas, remove_classes

DEFAULT_BAND_ELEMENTS = 2 ** 23


def source_rows(rows: torch.Tensor, in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear sampling of output ``rows`` as ``F.interpolate(align_corners=False)`` does it on the CPU:
    the two source rows of each output row and the weight of the second one. Like torch, the scale is a
    float32 ratio and the source coordinate its correctly rounded float32 product."""
    scale = float(torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32))
    source = ((rows.to(torch.float64) + 0.5) * scale - 0.5).to(torch.float32).clamp_min(0)
    lower = source.to(torch.int64).clamp_max(in_size - 1)  # truncation = floor: source >= 0
    upper = (lower + 1).clamp_max(in_size - 1)
    return lower, upper, source - lower


def upsample_rows(logits: torch.Tensor, start: int, stop: int, output_size: Tuple[int, int]) -> torch.Tensor:
    """Rows ``start:stop`` of the bilinear resize of ``logits`` (Q, H1, W1) to ``output_size``:
    (Q, stop - start, W0). Equals ``F.interpolate`` of the whole map up to float rounding."""
    rows = torch.arange(start, stop, device=logits.device)
    lower, upper, weight = source_rows(rows, logits.shape[1], output_size[0])
    weight = weight.to(logits.dtype).view(1, -1, 1)
    band = logits[:, lower] * (1 - weight) + logits[:, upper] * weight
    # Along the rows this resize is the identity (same size); along the columns it is the bilinear one.
    return F.interpolate(band[None], size=(stop - start, output_size[1]), mode="bilinear", align_corners=False)[0]


def full_size_predictions(logits: torch.Tensor, output_size: Tuple[int, int], query_to_class: Sequence[int],
                          num_classes: int, logit_scale: float, threshold: float, with_probabilities: bool = True,
                          band_elements: int = DEFAULT_BAND_ELEMENTS,
                          area_threshold: float = 0.0) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Final labels (and class probabilities) at ``output_size`` from window-merged logits.

    Args:
        logits: (Q, H1, W1) merged cosine logits at the resized size.
        output_size: (H0, W0).
        query_to_class, num_classes, logit_scale: as in ``class_probabilities``.
        threshold: background threshold (pixels whose max probability is below it get class 0).
        band_elements: upsampled logits held at a time (memory bound of the work, in elements).
        area_threshold: SCLIP's area rule (``kept_classes``; 0 = off); it needs the areas of the whole map, so a
            first sweep over the bands counts them.
    Returns:
        labels: (H0, W0) int32 on the CPU; probabilities: (C, H0, W0) float32 on the CPU (after the area
        rule), or None when ``with_probabilities`` is False. Same semantics as ``CDAMSegmentor`` (argmax of the
        background-encoded scores), values equal up to float rounding of the resize.
    """
    height, width = output_size
    rows_per_band = max(1, band_elements // max(1, logits.shape[0] * width))
    bands = [(start, min(start + rows_per_band, height)) for start in range(0, height, rows_per_band)]

    def band_probabilities(start, stop):
        return class_probabilities(upsample_rows(logits, start, stop, output_size), query_to_class, num_classes,
                                   logit_scale)

    kept = None
    if area_threshold > 0:
        kept = kept_classes(sum(predicted_areas(band_probabilities(*band)) for band in bands), area_threshold)
    labels = torch.empty(height, width, dtype=torch.int32)
    probabilities = torch.empty(num_classes, height, width) if with_probabilities else None
    for start, stop in bands:
        probs = band_probabilities(start, stop)
        if kept is not None:
            probs = remove_classes(probs, kept)
        labels[start:stop] = encode_background(probs, threshold).argmax(0).to(torch.int32).cpu()
        if probabilities is not None:
            probabilities[:, start:stop] = probs.cpu()
    return labels, probabilities
