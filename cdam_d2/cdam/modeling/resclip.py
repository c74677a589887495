"""ResCLIP (Yang et al., CVPR 2025, "Residual Attention for Training-free Dense Vision-language Inference") as a
base of ``DenseCLIPEncoder``: its released ViT forward (``arch='wo_resi'``, ``attn_strategy='resclip'``),
written from the blocks' own weights.

ResCLIP is NACLIP's reduced last block (key-key attention plus a Gaussian neighbourhood bias, no residual, no
FFN) with two changes to its attention, per window:

- RCS (residual cross-correlation self-attention): R = the mean over the RCS blocks of their ordinary per-head
  attention softmax(q k^T / sqrt(d)); the last block's attention becomes tau_r ((1 - lambda_r) A + lambda_r R).
- SFR (semantic feedback refinement): the last block with RCS alone gives a first segmentation of the window
  over the dataset's queries (bilinear to the window's pixels, PAMR guided by the window, softmax at the
  logit scale, pixels whose best probability is below a threshold set to query 0, per-patch majority label).
  Patches of equal label attend to each other: that 0/1 map, with pairs whose released path leaves the label
  decayed by exp(-c / c_max) (c: Chebyshev distance), blurred along each row by a 1-D Gaussian, rows
  normalized, CLS row and column 0, divided by its maximum, is mixed into the key-key logits:
  tau_s ((1 - lambda_s) k k^T / sqrt(d) + lambda_s S) before the neighbourhood bias and the softmax.

Shapes: B windows, T = N + 1 tokens (CLS first), H heads, g_h x g_w patch grid, Q dataset queries.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .cdam_attention import at_least_fp32
from .pamr import refine_masks
from .patch_grid import patch_coordinates, patch_logits

FEEDBACK_EPS = 1e-8
# Pair x sample elements per chunk of the path check (bounds its memory).
PATH_CHUNK_ELEMENTS = 2 ** 20


def _pair_steps(grid: Tuple[int, int], device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row-major (N, 2) float patch coordinates and (N, N) Chebyshev distances between patches."""
    coords = patch_coordinates(grid, device)
    return coords, (coords[:, None] - coords[None]).abs().amax(dim=-1)


def entity_paths(labels: torch.Tensor) -> torch.Tensor:
    """Whether the released path from patch i towards patch j stays on i's label.

    The release samples the segment from i to j at c_max + 1 evenly spaced points (t = k / c_max, c_max the
    largest Chebyshev distance on the grid), rounds them to patches (half to even) and checks the first
    c_ij + 1 of them, c_ij the pair's Chebyshev distance; so the checked path reaches j only when c_ij = c_max.

    Args:
        labels: (B, g_h, g_w) integer patch labels.
    Returns:
        (B, N, N) bool.
    """
    batch, _, width = labels.shape
    coords, steps = _pair_steps(labels.shape[1:], labels.device)
    num = coords.shape[0]
    samples = int(steps.max().item()) + 1
    fraction = torch.linspace(0, 1, samples, device=labels.device).view(1, 1, -1, 1)
    checked_step = torch.arange(samples, device=labels.device)
    flat = labels.flatten(1)
    result = torch.empty(batch, num, num, dtype=torch.bool, device=labels.device)
    chunk = max(1, PATH_CHUNK_ELEMENTS // (num * samples))
    for start in range(0, num, chunk):
        stop = min(num, start + chunk)
        # the release's form of the interpolation, so that points at .5 round the same way
        points = (coords[start:stop, None, None] * (1 - fraction) + coords[None, :, None] * fraction).round().long()
        sampled = flat[:, points[..., 0] * width + points[..., 1]]  # (B, rows, N, samples)
        outside = checked_step > steps[start:stop, :, None]
        result[:, start:stop] = ((sampled == flat[:, start:stop, None, None]) | outside).all(dim=-1)
    return result


def feedback_attention(labels: torch.Tensor, sigma: float, same_entity_decay: bool = True) -> torch.Tensor:
    """SFR's attention map of one segmentation per window.

    Args:
        labels: (B, g_h, g_w) integer patch labels.
        sigma: std (in flattened patch positions) of the 1-D Gaussian blur along each row.
        same_entity_decay: decay equal-label pairs whose path leaves the label (``delete_same_entity``).
    Returns:
        (B, T, T) float32 in [0, 1] (maximum 1), CLS row and column 0.
    """
    flat = labels.flatten(1)
    num = flat.shape[1]
    same = (flat[:, :, None] == flat[:, None, :]).float()
    if same_entity_decay:
        _, steps = _pair_steps(labels.shape[1:], labels.device)
        decay = torch.exp(-steps / max(steps.max().item(), 1.0))
        same = torch.where(entity_paths(labels), same, same * decay)
    size = min(num, int(6 * sigma + 1))
    size += 1 - size % 2  # odd, centred
    offsets = torch.arange(size, device=labels.device) - size // 2
    kernel = torch.exp(-offsets.square() / (2 * sigma ** 2))
    blurred = F.conv1d(same.view(-1, 1, num), (kernel / kernel.sum()).view(1, 1, -1), padding=size // 2)
    blurred = F.relu(blurred.view(-1, num, num))
    rows = F.pad(blurred / (blurred.sum(dim=-1, keepdim=True) + FEEDBACK_EPS), (1, 0, 1, 0))
    return rows / rows.amax(dim=(1, 2), keepdim=True)


def patch_majority(labels: torch.Tensor, patch_size: Tuple[int, int], grid: Tuple[int, int],
                   num_labels: int) -> torch.Tensor:
    """(B, h, w) pixel labels -> (B, g_h, g_w) most frequent label of each patch's pixels (the smallest among
    ties); pixels past the last whole patch are ignored."""
    (size_h, size_w), batch = patch_size, labels.shape[0]
    pixels = labels[:, :grid[0] * size_h, :grid[1] * size_w].reshape(batch, grid[0], size_h, grid[1], size_w)
    pixels = pixels.permute(0, 1, 3, 2, 4).reshape(batch, grid[0] * grid[1], -1)
    counts = torch.zeros(batch, pixels.shape[1], num_labels, device=labels.device)
    counts.scatter_add_(2, pixels, torch.ones_like(pixels, dtype=counts.dtype))
    return counts.argmax(dim=-1).view(batch, *grid)


@dataclass
class ResCLIPState:
    """Attributes:
        rcs: (B, H, T, T) mean attention of the RCS blocks.
        images: (B, 3, h, w) normalized windows (PAMR guide of the first segmentation).
    """

    rcs: torch.Tensor
    images: torch.Tensor


class ResCLIPBase:
    """ResCLIP's computation beyond the last block's input, for ``DenseCLIPEncoder(base="resclip")``.

    Its neighbourhood bias and SFR blur both use the encoder's ``naclip_sigma`` (one ``gaussian_std`` in the
    release). Defaults are the release's VOC21 settings.
    """

    def __init__(self, num_blocks: Optional[int], logit_scale: float = 40.0, rcs_layers: Tuple[int, int] = (5, 9),
                 rcs_weights: Sequence[float] = (2.0, 0.3), sfr_weights: Sequence[float] = (2.2, 0.7),
                 sfr_threshold: float = 0.5, sfr_pamr_steps: int = 10, sfr_pamr_dilations: Sequence[int] = (8, 16),
                 same_entity_decay: bool = True):
        """The options are checked here (a ValueError names the key).

        Args:
            num_blocks: blocks of the tower; None checks the options before the tower is built (all but the
                layers' upper bound).
            logit_scale: softmax scale of the first segmentation (the segmentor's, as released).
            rcs_layers: [start, end) 0-based blocks (before the last) whose attention maps are averaged.
            rcs_weights, sfr_weights: (tau, lambda) of the RCS and SFR mixtures.
            sfr_threshold: best probability below which a pixel of the first segmentation gets label 0.
            sfr_pamr_steps, sfr_pamr_dilations: PAMR of the first segmentation (0 steps: none).
            same_entity_decay: decay equal-label pairs whose path leaves the label.
        """
        end = math.inf if num_blocks is None else num_blocks - 1
        if len(rcs_layers) != 2 or not 0 <= rcs_layers[0] < rcs_layers[1] <= end:
            bound = "" if num_blocks is None else f" <= {end} for this {num_blocks}-block tower"
            raise ValueError(f"MODEL.CDAM.RESCLIP.RCS_LAYERS {tuple(rcs_layers)} must be [start, end) with "
                             f"0 <= start < end{bound}")
        for key, weights in (("RCS_WEIGHTS", rcs_weights), ("SFR_WEIGHTS", sfr_weights)):
            if len(weights) != 2:
                raise ValueError(f"MODEL.CDAM.RESCLIP.{key} {tuple(weights)} must be (tau, lambda)")
        if not 0 <= sfr_threshold <= 1:
            raise ValueError(f"MODEL.CDAM.RESCLIP.SFR_THRESHOLD {sfr_threshold} must be in [0, 1] (a probability)")
        if sfr_pamr_steps < 0:
            raise ValueError(f"MODEL.CDAM.RESCLIP.SFR_PAMR_STEPS {sfr_pamr_steps} must be >= 0")
        if not all(dilation >= 1 for dilation in sfr_pamr_dilations):
            raise ValueError(f"MODEL.CDAM.RESCLIP.SFR_PAMR_DILATIONS {tuple(sfr_pamr_dilations)} must be positive")
        self.logit_scale = logit_scale
        self.rcs_layers = tuple(rcs_layers)
        self.rcs_weights = tuple(rcs_weights)
        self.sfr_weights = tuple(sfr_weights)
        self.sfr_threshold = sfr_threshold
        self.sfr_pamr_steps = sfr_pamr_steps
        self.sfr_pamr_dilations = tuple(sfr_pamr_dilations)
        self.same_entity_decay = same_entity_decay

    def run_blocks(self, encoder, tokens: torch.Tensor, grid: Tuple[int, int],
                   images: torch.Tensor) -> Tuple[torch.Tensor, ResCLIPState]:
        """(B, T, D) embedded tokens of ``images`` on ``grid`` -> (B, T, D) input of the last block and ResCLIP's
        state."""
        start, end = self.rcs_layers
        total = None
        for index, block in enumerate(encoder.blocks[:-1]):
            if not start <= index < end:
                tokens = encoder._run_block(block, tokens)
                continue
            queries, keys, values = encoder._qkv(block, block.ln_1(tokens))
            weights = encoder._softmax_weights(queries, keys, grid)
            tokens = encoder._attn_residual_ffn(block, tokens, encoder._attend(block, weights, values))
            total = weights if total is None else total + weights
        return tokens, ResCLIPState(total / (end - start), images)

    def _rcs_mixture(self, logits: torch.Tensor, rcs: torch.Tensor) -> torch.Tensor:
        """(B, H, T, T) attention logits, (B, H, T, T) RCS map R -> (B, H, T, T) weights
        tau_r ((1 - lambda_r) softmax(logits) + lambda_r R)."""
        tau, share = self.rcs_weights
        return tau * ((1 - share) * torch.softmax(logits, dim=-1) + share * rcs)

    def first_labels(self, encoder, features: torch.Tensor, queries: torch.Tensor, images: torch.Tensor,
                     grid: Tuple[int, int]) -> torch.Tensor:
        """(B, N, E) unit features of the RCS-only block -> (B, g_h, g_w) patch labels (query indices)."""
        features = at_least_fp32(features)
        logits = patch_logits(features, queries.to(features.dtype), grid)
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        logits = refine_masks(images, logits, self.sfr_pamr_steps, self.sfr_pamr_dilations)
        probs = torch.softmax(self.logit_scale * logits, dim=1)
        labels = probs.argmax(dim=1).masked_fill(probs.amax(dim=1) < self.sfr_threshold, 0)
        return patch_majority(labels, encoder.patch_size, grid, queries.shape[0])

    def _last_weights(self, encoder, state, queries: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``StreamState`` with ``extras`` from :meth:`run_blocks`, (Q, E) unit dataset queries -> the (B, H, T, T)
        attention weights of the last block (RCS and SFR) and its (B, H, T, d) values; keeps the values, heads
        concatenated, in ``state.values``."""
        if queries is None:
            raise ValueError("ResCLIP's first pass needs the dataset's text queries (its semantic feedback "
                             "segments the window first)")
        block, extras = encoder.blocks[-1], state.extras
        _, keys, values = encoder._qkv(block, block.ln_1(state.tokens))
        state.values = encoder._merge_heads(values)
        logits = encoder._scaled_scores(keys, keys)
        bias = encoder._neighbourhood_bias(state.grid, logits.device, logits.dtype)
        preliminary = encoder.project(encoder._attend(block, self._rcs_mixture(logits + bias, extras.rcs), values))
        labels = self.first_labels(encoder, preliminary, queries, extras.images, state.grid)
        feedback = feedback_attention(labels, encoder.naclip_sigma, self.same_entity_decay)
        tau, share = self.sfr_weights
        # The release holds the map, and its weighted term, in fp16 whatever the model's precision.
        feedback = (share * feedback.to(torch.float16)).to(logits.dtype)[:, None]
        refined = tau * ((1 - share) * logits + feedback) + bias
        return self._rcs_mixture(refined, extras.rcs), values

    def first_pass(self, encoder, state, queries: Optional[torch.Tensor]) -> torch.Tensor:
        """``StreamState`` with ``extras`` from :meth:`run_blocks`, (Q, E) unit dataset queries -> (B, N, E)
        ResCLIP patch features; keeps the last block's values in ``state.values``."""
        weights, values = self._last_weights(encoder, state, queries)
        return encoder.project(encoder._attend(encoder.blocks[-1], weights, values))

    def base_attention(self, encoder, state, queries: Optional[torch.Tensor]) -> torch.Tensor:
        """The attention the first pass applies -> (B, N, N), head mean, CLS row and column dropped (a row sums
        to at most tau_r, the RCS weight, as the full rows do)."""
        return self._last_weights(encoder, state, queries)[0].mean(dim=1)[:, 1:, 1:]
