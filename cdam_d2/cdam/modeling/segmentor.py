"""CDAM training-free segmentation of one image with sliding windows (plain torch): windows (optionally padded to
the patch size, or the whole image as one), the base's first pass, CDAM's map and second pass (or the base
alone), the window merge, optional PAMR, SCLIP's area rule and a background rule (CDAM's entropy threshold, a
fixed one, or none). The defaults are the released pipeline."""
import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .cdam_attention import DEFAULT_CHUNK_ELEMENTS, DEFAULT_SCALES, EPS, at_least_fp32, cdam_attention
from .dense_clip import SECOND_PASS_MODES, DenseCLIPEncoder, StreamState
from .pamr import refine_masks
from .patch_grid import patch_logits
from .postprocess import (BACKGROUND_RULES, THRESHOLD_SOURCES, background_threshold, class_probabilities,
                          encode_background, kept_classes, patch_entropy_bits, predicted_areas, remove_classes)
from .sliding_window import (NO_PADDING, Box, Padding, check_windows, crop_windows, merge_windows, patch_padding,
                             window_boxes)

# Per-image stages, named in torch.profiler traces and for ``CDAMSegmentor.stage_timer``.
STAGES = ("cdam: backbone", "cdam: map", "cdam: second pass", "cdam: post-processing")


def check_segmentor_options(second_pass: str, threshold_source: str, background_rule: str, fixed_threshold: float,
                            area_threshold: float, crop: int, stride: int) -> None:
    """Raise a ValueError naming the ``MODEL.CDAM`` key, its value and what is allowed unless the segmentor's
    choices and thresholds are valid (see :class:`CDAMSegmentor`; no weights needed)."""
    if second_pass not in SECOND_PASS_MODES:
        raise ValueError(f"MODEL.CDAM.SECOND_PASS {second_pass!r} is not one of {SECOND_PASS_MODES}")
    if threshold_source not in THRESHOLD_SOURCES:
        raise ValueError(f"MODEL.CDAM.THRESHOLD_SOURCE {threshold_source!r} is not one of {THRESHOLD_SOURCES}")
    if background_rule not in BACKGROUND_RULES:
        raise ValueError(f"MODEL.CDAM.BACKGROUND_RULE {background_rule!r} is not one of {BACKGROUND_RULES}")
    if not 0 <= fixed_threshold <= 1:
        raise ValueError(f"MODEL.CDAM.BACKGROUND_THRESHOLD {fixed_threshold} must be in [0, 1] (it is compared "
                         "with class probabilities)")
    if area_threshold < 0:
        raise ValueError(f"MODEL.CDAM.AREA_THRESHOLD {area_threshold} must be >= 0 (a share of the foreground "
                         "area; 0 = off)")
    check_windows(crop, stride)


@dataclass
class TextQueries:
    """Text side of one vocabulary.

    Attributes:
        dataset: (Q_D, E) unit-norm embeddings of the dataset queries (synonyms flattened).
        extra: (Q_A, E) embeddings only used for the CDAM class distributions (ATP words); may have 0 rows.
        query_to_class: class index of each dataset query.
        num_classes: C, the number of output channels.
    """

    dataset: torch.Tensor
    extra: torch.Tensor
    query_to_class: Tuple[int, ...]
    num_classes: int


@dataclass
class SegmentationResult:
    """Attributes:
        scores: (C, H0, W0) class probabilities with thresholded pixels' background channel raised by 1, so
            that ``scores.argmax(0)`` is the final label map.
        logits: (Q_D, H0, W0) merged cosine logits at the output size.
        threshold: background threshold applied to the max class probability (0: none).
        probabilities: (C, H0, W0) class probabilities after the area rule (``scores`` before the background
            rule).
    """

    scores: torch.Tensor
    logits: torch.Tensor
    threshold: float
    probabilities: torch.Tensor


class CDAMSegmentor(nn.Module):
    """Sliding-window dense CLIP inference with the CDAM second pass and a background rule."""

    def __init__(self, encoder: DenseCLIPEncoder, *, use_cdam: bool = True, second_pass: str = "released",
                 temperature: float = 0.1, sharpen_temperature: float = 0.1,
                 scales: Sequence[float] = DEFAULT_SCALES, row_normalize: bool = False, logit_scale: float = 50.0,
                 entropy_scale: float = 50.0, alpha: float = 2.5, threshold_default: float = 0.5,
                 threshold_source: str = "last_window", crop: int = 448, stride: int = 224,
                 window_batch: int = 0, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                 autocast_dtypes: Optional[Mapping[str, Optional[torch.dtype]]] = None, pamr_steps: int = 0,
                 pamr_dilations: Sequence[int] = (8, 16), background_rule: str = "entropy",
                 fixed_threshold: float = 0.0, area_threshold: float = 0.0, pad_windows: bool = False):
        """
        Args:
            encoder: dense CLIP encoder with the first-pass base variant.
            use_cdam: False gives the base method alone (first-pass features).
            second_pass: "released" or "base" (see ``DenseCLIPEncoder.second_pass``).
            temperature, sharpen_temperature, scales: CDAM's class-softmax temperature T, row-softmax
                temperature P and reduced-resolution scale set.
            row_normalize: ablation: divide each row of W by its sum (off in the release).
            logit_scale: softmax scale of the final probabilities; entropy_scale: of the threshold entropy.
            alpha, threshold_default: thr = alpha * threshold_default / H_center; alpha = 0 disables.
            threshold_source: "last_window" (released) or "image".
            crop, stride: sliding windows on the resized image; crop 0: the whole image as one window.
            window_batch: windows per forward (0 = all windows of the image at once).
            chunk_elements: memory bound of the JS chunks (elements; 0 = by device).
            autocast_dtypes: backbone autocast dtype per device type, e.g. {"cuda": torch.float16, "cpu":
                torch.bfloat16}; a device type not listed (or None) runs fp32. The CDAM map is fp32 always.
            pamr_steps, pamr_dilations: PAMR of the merged logits at the output size, guided by the image
                resized to it (0 steps = off, as released; NACLIP uses 10 steps, dilations (8, 16)).
            background_rule: one of ``BACKGROUND_RULES``: "entropy" (alpha, threshold_default, entropy_scale,
                threshold_source), "fixed" (``fixed_threshold``) or "none".
            area_threshold: SCLIP's area rule (``kept_classes``) before the background rule; 0 = off.
            pad_windows: zero-pad each window to multiples of the patch size (ClearCLIP) instead of letting
                the patch convolution drop the remainder.
        """
        super().__init__()
        check_segmentor_options(second_pass, threshold_source, background_rule, fixed_threshold, area_threshold,
                                crop, stride)
        self.encoder = encoder
        self.use_cdam = use_cdam
        self.second_pass = second_pass
        self.temperature = temperature
        self.sharpen_temperature = sharpen_temperature
        self.scales = tuple(scales)
        self.row_normalize = row_normalize
        self.logit_scale = logit_scale
        self.entropy_scale = entropy_scale
        self.alpha = alpha
        self.threshold_default = threshold_default
        self.threshold_source = threshold_source
        self.crop = crop
        self.stride = stride
        self.window_batch = window_batch
        self.chunk_elements = chunk_elements
        self.autocast_dtypes = dict(autocast_dtypes or {})
        self.pamr_steps = pamr_steps
        self.pamr_dilations = tuple(pamr_dilations)
        self.background_rule = background_rule
        self.fixed_threshold = fixed_threshold
        self.area_threshold = area_threshold
        self.pad_windows = pad_windows
        # Optional: a callable name -> context manager entered around each stage (benchmarks time them).
        self.stage_timer: Optional[Callable[[str], ContextManager]] = None

    @contextlib.contextmanager
    def _stage(self, name: str):
        with record_function(name), (self.stage_timer(name) if self.stage_timer else contextlib.nullcontext()):
            yield

    def _autocast(self, device: torch.device):
        dtype = self.autocast_dtypes.get(device.type)
        if dtype is None or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def attention_map(self, first_logits: torch.Tensor) -> torch.Tensor:
        """(B, Q, g_h, g_w) first-pass logits over all queries -> (B, N, N) fp32 CDAM map W."""
        with torch.autocast(first_logits.device.type, enabled=False):  # fp32 even inside an outer autocast
            weights = cdam_attention(first_logits, self.temperature, self.sharpen_temperature, self.scales,
                                     self.chunk_elements)
        if self.row_normalize:
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(EPS)
        return weights

    def first_pass_and_map(self, windows: torch.Tensor, text: TextQueries, with_map: Optional[bool] = None):
        """(B, 3, h, w) normalized windows -> the stream state, the first-pass (base) features (B, N, E) and the
        CDAM map W (B, N, N) (None unless ``with_map``, default ``use_cdam``)."""
        with self._stage(STAGES[0]), self._autocast(windows.device):
            state = self.encoder.forward_to_last_block(windows)
            features = self.encoder.first_pass(state, text.dataset)
        weights = None
        if self.use_cdam if with_map is None else with_map:
            with self._stage(STAGES[1]):
                features = at_least_fp32(features)
                queries = torch.cat([text.dataset, text.extra]).to(features.dtype)
                weights = self.attention_map(patch_logits(features, queries, state.grid))
        return state, features, weights

    def base_attention(self, state: StreamState, text: TextQueries) -> torch.Tensor:
        """(B, N, N) attention of the base's last block in the first pass of ``state`` (head mean, patches only;
        ``DenseCLIPEncoder.base_attention``), under the backbone's autocast as in :meth:`first_pass_and_map`."""
        with self._autocast(state.tokens.device):
            return self.encoder.base_attention(state, text.dataset)

    def window_logits(self, windows: torch.Tensor, text: TextQueries) -> torch.Tensor:
        """(B, 3, h, w) normalized windows -> (B, Q_D, g_h, g_w) cosine logits (fp32, or fp64 for an fp64 model)
        over the dataset queries.

        The stages are named for ``torch.profiler`` and ``stage_timer`` ("cdam: backbone", "cdam: map",
        "cdam: second pass").
        """
        state, features, weights = self.first_pass_and_map(windows, text)
        if weights is not None:
            with self._stage(STAGES[2]), self._autocast(windows.device):
                features = self.encoder.second_pass(state, weights, self.second_pass)
        features = at_least_fp32(features)
        return patch_logits(features, text.dataset.to(features.dtype), state.grid)

    def window_layout(self, height: int, width: int) -> Tuple[List[Box], Padding]:
        """The sliding windows of a ``height`` x ``width`` (resized) image and the padding every window gets
        (``NO_PADDING`` unless ``pad_windows``); all windows have the size of the first."""
        boxes = window_boxes(height, width, self.crop, self.stride)
        y1, y2, x1, x2 = boxes[0]
        padding = patch_padding(y2 - y1, x2 - x1, self.encoder.patch_size) if self.pad_windows else NO_PADDING
        return boxes, padding

    def merged_logits(self, image: torch.Tensor, text: TextQueries) -> Tuple[torch.Tensor, float]:
        """(3, H1, W1) normalized image -> (Q_D, H1, W1) window-merged cosine logits at the resized size and
        the background threshold (overlaps are averaged on cosine logits, before any softmax); :meth:`postprocess`
        takes them to the output size."""
        boxes, padding = self.window_layout(*image.shape[-2:])
        step = self.window_batch if self.window_batch > 0 else len(boxes)
        per_window = torch.cat([self.window_logits(crop_windows(image, boxes[start:start + step], padding), text)
                                for start in range(0, len(boxes), step)])
        with self._stage(STAGES[3]):
            merged = merge_windows(per_window, boxes, tuple(image.shape[-2:]), padding)
            return merged, self.image_threshold(per_window)

    def image_threshold(self, per_window: torch.Tensor) -> float:
        """The image's background threshold under the background rule, from (B, Q_D, g_h, g_w) window logits
        in raster order (used by the "entropy" rule); 0 for "none"."""
        if self.background_rule == "fixed":
            return self.fixed_threshold
        if self.background_rule == "none":
            return 0.0
        entropy = patch_entropy_bits(per_window.flatten(2), self.entropy_scale)
        return background_threshold(entropy, self.alpha, self.threshold_default, self.threshold_source)

    @torch.no_grad()
    def forward(self, image: torch.Tensor, output_size: Tuple[int, int], text: TextQueries) -> SegmentationResult:
        """Segment one image (inference only: no autograd graph is kept).

        Args:
            image: (3, H1, W1) normalized float image (already resized by the test mapper).
            output_size: (H0, W0) original size of the image.
            text: query embeddings of the vocabulary.
        """
        merged, threshold = self.merged_logits(image, text)
        with self._stage(STAGES[3]):
            return self.postprocess(merged, threshold, image, output_size, text)

    def postprocess(self, merged: torch.Tensor, threshold: float, image: torch.Tensor,
                    output_size: Tuple[int, int], text: TextQueries) -> SegmentationResult:
        """Resize to the output size, PAMR, probabilities, the area rule and the background rule.

        Args:
            merged: (Q_D, H1, W1) window-merged cosine logits of ``image`` (3, H1, W1); threshold: its
                background threshold.
        """
        logits = F.interpolate(merged[None], size=tuple(output_size), mode="bilinear", align_corners=False)
        if self.pamr_steps > 0:
            guide = F.interpolate(image[None], size=tuple(output_size), mode="bilinear", align_corners=False)
            logits = refine_masks(guide, logits, self.pamr_steps, self.pamr_dilations)
        logits = logits[0]
        probs = class_probabilities(logits, text.query_to_class, text.num_classes, self.logit_scale)
        if self.area_threshold > 0:
            probs = remove_classes(probs, kept_classes(predicted_areas(probs), self.area_threshold))
        return SegmentationResult(encode_background(probs, threshold), logits, threshold, probs)
