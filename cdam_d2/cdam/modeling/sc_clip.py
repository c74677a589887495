"""SC-CLIP (Bai et al., "Self-Calibrated CLIP for Training-Free Open-Vocabulary Segmentation") as a base of
``DenseCLIPEncoder``: its released ViT forward, written from the blocks' own weights.

Per window, with h_b the output of block b (0-based), x = h_{L-2} the input of the last block, N patches:

1. Anomaly tokens: the patches of x whose local outlier factor (:func:`local_outlier_mask`) is above the 95th
   percentile are replaced by the mean of their non-anomalous 8-neighbours (:func:`fill_outliers`).
2. Pre-adjustment: S = cosine similarities of the patches of h_pre (anomalies filled the same way); the filled
   patches are averaged with the row-normalized weights S * [S >= 0.4].
3. The last block's attention, on patch tokens only (no CLS) and without residual or FFN: per head the mean of
   softmax(3 (S - mean S)) (entries below the mean masked) and softmax(k k^T / sqrt(d)), then ``out_proj``;
   0.3 x the CLS token is added to every patch.
4. Post-adjustment: the result is averaged with the thresholded, row-normalized cosine similarities of the
   (unfilled) patches of h_post.
5. Multi-level fusion: steps 3-4 also run on the sum of h_b over the multi-level blocks (its CLS token as the
   CLS term) and are added.

The fused tokens give the features through ``ln_post``, ``proj`` and normalization, as every base.
Shapes: B windows, T = N + 1 tokens, D width, H heads of size d.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from .cdam_attention import at_least_fp32

# Constants fixed in the release (not constructor arguments there).
SIMILARITY_THRESHOLD = 0.4  # beta of the pre- and post-adjustment similarities
SIMILARITY_SCALE = 3.0  # sharpening of the centred similarities in the last block's attention
LOF_NEIGHBOURS = 30
LOF_CONTAMINATION = 0.05  # share of patches flagged as anomalous
AGGREGATION_EPS = 1e-6


def local_outlier_mask(tokens: torch.Tensor, neighbours: int = LOF_NEIGHBOURS,
                       contamination: float = LOF_CONTAMINATION) -> torch.Tensor:
    """Anomalous tokens by the released local outlier factor.

    Distances are squared Euclidean. The released reachability distance of a point to a neighbour takes the
    k-distance of the point itself, not of the neighbour, so it is that point's k-distance for every
    neighbour: the density of a point is k / k-distance and its factor the mean, over its k nearest
    neighbours, of their density over its own. Tokens above the (1 - contamination) quantile (linear
    interpolation) are anomalous; ``neighbours`` is capped at N - 1 for small grids (the release needs N > 30).

    Args:
        tokens: (B, N, D) patch tokens.
    Returns:
        (B, N) bool mask.
    """
    count = min(neighbours, tokens.shape[1] - 1)
    if count < 1:
        return torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    points = at_least_fp32(tokens)
    # exact differences (no |a|^2 + |b|^2 - 2ab cancellation), so near neighbours keep their order
    distances = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist").square()
    nearest, index = distances.topk(count + 1, dim=-1, largest=False)  # column 0: the token itself
    # density 1 / k-distance (k cancels in the ratios); a k-distance of 0 (duplicates) stays finite
    density = 1.0 / nearest[..., -1].clamp_min(torch.finfo(points.dtype).tiny)
    neighbour_density = density.gather(1, index[..., 1:].flatten(1)).view(index.shape[0], -1, count)
    factor = (neighbour_density / density[..., None]).mean(dim=-1)
    return factor > torch.quantile(factor, 1 - contamination, dim=-1, keepdim=True)


def fill_outliers(tokens: torch.Tensor, outliers: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """Each flagged token becomes the mean of its unflagged 8-neighbours on the patch grid (unchanged when it
    has none).

    Args:
        tokens: (B, N, D) patch tokens, row-major on ``grid``; outliers: (B, N) bool.
    Returns:
        (B, N, D).
    """
    batch, _, width = tokens.shape
    maps = tokens.transpose(1, 2).reshape(batch, width, *grid)
    keep = (~outliers).to(tokens.dtype).view(batch, 1, *grid)
    padded_maps, padded_keep = F.pad(maps * keep, (1, 1, 1, 1)), F.pad(keep, (1, 1, 1, 1))
    total, count = torch.zeros_like(maps), torch.zeros_like(keep)
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) != (1, 1):
                total += padded_maps[..., dy:dy + grid[0], dx:dx + grid[1]]
                count += padded_keep[..., dy:dy + grid[0], dx:dx + grid[1]]
    replace = outliers.view(batch, 1, *grid) & (count > 0)
    filled = torch.where(replace, total / count.clamp_min(1), maps)
    return filled.flatten(2).transpose(1, 2)


def cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, N, N) cosine similarities between tokens."""
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    return unit @ unit.transpose(1, 2)


def aggregate(similarity: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Average ``tokens`` (B, N, D) with the weights ``similarity`` (B, N, N) kept where >= the threshold,
    rows normalized to sum 1 -> (B, N, D)."""
    weights = torch.where(similarity < SIMILARITY_THRESHOLD, torch.zeros_like(similarity), similarity)
    return (weights / (weights.sum(dim=-1, keepdim=True) + AGGREGATION_EPS)) @ tokens


@dataclass
class SCCLIPState:
    """What SC-CLIP's last block needs besides the last block's input (all per window).

    Attributes:
        tokens: (B, N, D) anomaly-filled, pre-adjusted patch tokens (input of the main path).
        cls: (B, 1, D) CLS token entering the last block.
        multi_level: (B, T, D) sum of the multi-level blocks' outputs.
        pre_similarity: (B, N, N) cosine similarities of the filled pre-adjustment patches.
        post_similarity: (B, N, N) cosine similarities of the post-adjustment patches.
    """

    tokens: torch.Tensor
    cls: torch.Tensor
    multi_level: torch.Tensor
    pre_similarity: torch.Tensor
    post_similarity: torch.Tensor


class SCCLIPBase:
    """SC-CLIP's computation beyond the last block's input, for ``DenseCLIPEncoder(base="sc_clip")``.

    Block indices are 0-based indices of ``visual.transformer.resblocks`` (the release's ViT-B/16 values are
    the defaults); all must be blocks before the last one.
    """

    def __init__(self, num_blocks: Optional[int], pre_adjust_layer: int = 8, post_adjust_layer: int = 3,
                 multi_level_layers: Tuple[int, int] = (3, 10), cls_weight: float = 0.3):
        """The options are checked here (a ValueError names the key).

        Args:
            num_blocks: blocks of the tower; None checks the options before the tower is built (all but the
                layers' upper bound).
            pre_adjust_layer: block whose output gives the pre-adjustment and attention similarities.
            post_adjust_layer: block whose output gives the post-adjustment similarities.
            multi_level_layers: [start, end) blocks whose outputs are summed for the multi-level path.
            cls_weight: weight of the CLS token added to every patch after the attention.
        """
        last = math.inf if num_blocks is None else num_blocks - 2
        tower = "" if num_blocks is None else f" of this {num_blocks}-block tower (0..{last})"
        for key, index in (("PRE_ADJUST_LAYER", pre_adjust_layer), ("POST_ADJUST_LAYER", post_adjust_layer)):
            if not 0 <= index <= last:
                raise ValueError(f"MODEL.CDAM.SC_CLIP.{key} {index} is not a block before the last one{tower}")
        if len(multi_level_layers) != 2 or not 0 <= multi_level_layers[0] < multi_level_layers[1] <= last + 1:
            bound = "" if num_blocks is None else f" <= {last + 1} for this {num_blocks}-block tower"
            raise ValueError(f"MODEL.CDAM.SC_CLIP.MULTI_LEVEL_LAYERS {tuple(multi_level_layers)} must be "
                             f"[start, end) with 0 <= start < end{bound}")
        self.pre_adjust_layer = pre_adjust_layer
        self.post_adjust_layer = post_adjust_layer
        self.multi_level_layers = tuple(multi_level_layers)
        self.cls_weight = cls_weight

    def run_blocks(self, encoder, tokens: torch.Tensor, grid: Tuple[int, int],
                   images: torch.Tensor) -> Tuple[torch.Tensor, SCCLIPState]:
        """(B, T, D) embedded tokens of ``images`` on ``grid`` -> (B, T, D) input of the last block and SC-CLIP's
        state."""
        outputs, multi_level = [], None
        start, end = self.multi_level_layers
        for index, block in enumerate(encoder.blocks[:-1]):
            tokens = encoder._run_block(block, tokens)
            outputs.append(tokens)
            if start <= index < end:
                multi_level = tokens if multi_level is None else multi_level + tokens
        outliers = local_outlier_mask(tokens[:, 1:])
        pre = fill_outliers(outputs[self.pre_adjust_layer][:, 1:], outliers, grid)
        pre_similarity = cosine_similarity(pre)
        filled = aggregate(pre_similarity, fill_outliers(tokens[:, 1:], outliers, grid))
        post_similarity = cosine_similarity(outputs[self.post_adjust_layer][:, 1:])
        return tokens, SCCLIPState(filled, tokens[:, :1], multi_level, pre_similarity, post_similarity)

    def _fused(self, encoder, state: SCCLIPState, attend: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Last block on the main and multi-level paths with ``attend`` ((B, N, D) normalized tokens -> (B, N, D)
        attention output after ``out_proj``), post-adjusted and summed -> (B, N, E) unit features."""
        block = encoder.blocks[-1]
        main = attend(block.ln_1(state.tokens)) + self.cls_weight * state.cls
        multi = attend(block.ln_1(state.multi_level[:, 1:])) + self.cls_weight * state.multi_level[:, :1]
        fused = aggregate(state.post_similarity, main) + aggregate(state.post_similarity, multi)
        return encoder.project(fused, drop_cls=False)

    @staticmethod
    def _similarity_weights(state: SCCLIPState) -> torch.Tensor:
        """(B, 1, N, N) softmax of the centred, sharpened pre-adjustment similarities, entries below the mean
        masked; shared by the heads and the two paths."""
        centred = SIMILARITY_SCALE * (state.pre_similarity - state.pre_similarity.mean(dim=(1, 2), keepdim=True))
        centred = centred.masked_fill(centred < 0, float("-inf"))  # the diagonal (cosine 1) stays finite
        return torch.softmax(centred, dim=-1)[:, None]

    @staticmethod
    def _attention(encoder, normed: torch.Tensor, similarity_weights: torch.Tensor):
        """(B, N, D) normalized patch tokens -> the last block's (B, H, N, N) attention weights (the mean of the
        similarity weights and softmax(k k^T / sqrt(d))) and its (B, H, N, d) values."""
        _, keys, values = encoder._qkv(encoder.blocks[-1], normed)
        return (similarity_weights + torch.softmax(encoder._scaled_scores(keys, keys), dim=-1)) / 2, values

    def first_pass(self, encoder, state, queries=None) -> torch.Tensor:
        """``StreamState`` with ``extras`` from :meth:`run_blocks` -> (B, N, E) SC-CLIP patch features (text
        ``queries`` unused)."""
        block, extras = encoder.blocks[-1], state.extras
        similarity_weights = self._similarity_weights(extras)

        def attend(normed):
            return encoder._attend(block, *self._attention(encoder, normed, similarity_weights))

        return self._fused(encoder, extras, attend)

    def base_attention(self, encoder, state, queries=None) -> torch.Tensor:
        """The attention the first pass applies on the main path (the image's pre-adjusted patches) -> (B, N, N),
        head mean; the multi-level path attends with the same similarity term and its own keys (text
        ``queries`` unused)."""
        extras = state.extras
        normed = encoder.blocks[-1].ln_1(extras.tokens)
        return self._attention(encoder, normed, self._similarity_weights(extras))[0].mean(dim=1)

    def second_pass(self, encoder, state, patch_attention: torch.Tensor) -> torch.Tensor:
        """CDAM's map as the last block's attention on both of SC-CLIP's paths (``SECOND_PASS "base"``).

        Args:
            patch_attention: (B, N, N) map shared by the heads (SC-CLIP's last block has no CLS token).
        """
        block = encoder.blocks[-1]

        def attend(normed):
            return encoder._out_proj(block, torch.bmm(patch_attention.to(normed.dtype), encoder._value(block, normed)))

        return self._fused(encoder, state.extras, attend)

