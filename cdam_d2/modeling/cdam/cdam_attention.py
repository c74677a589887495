"""The CDAM attention map (spec §3) in fp32, without materialising any Q x N x N tensor.

Shapes: B windows, Q queries, grid (g_h, g_w), N = g_h * g_w patches.
"""
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

EPS = 1e-8
DEFAULT_SCALES = (0.25, 0.37, 0.5, 0.63, 0.75, 0.87)
TINY = 1e-30  # probability floor of the JS logs
# Pair sums per chunk (B x Q x rows x columns): 2**20 fp32 = 4 MiB, plus one temporary of that size.
DEFAULT_CHUNK_ELEMENTS = 2 ** 20


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 (used by tests) are kept."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def class_distributions(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, Q, N) cosine logits -> (B, Q, N) fp32 softmax over queries of logits / T (spec §3.1)."""
    return torch.softmax(at_least_fp32(logits) / temperature, dim=1)


def js_divergence(probs: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Jensen-Shannon divergence between all patch pairs (spec §3.2, natural log).

    Uses the entropy form JS_ij = H(m_ij) - (H(p_i) + H(p_j)) / 2 with H(x) = -sum_c x ln x. Writing
    s = p_i + p_j = 2 m: sum_c m ln m = (sum_c s ln s - ln2 * sum_c s) / 2, so only sum_c s ln s needs pair-wise
    work: one log per pair and class. It is computed for the upper triangle in chunks of query rows (about
    ``chunk_elements`` pair sums at a time, so no Q x N x N tensor exists) and mirrored, which also makes the
    result exactly symmetric. The released eps (1e-8 inside every log) is left out: its first-order effects
    cancel between the three entropies (differences ~1e-7, spec §7.2); probabilities are clamped to 1e-30 so
    that 0 ln 0 = 0.

    Args:
        probs: (B, Q, N) class distributions (columns sum to 1).
    Returns:
        (B, N, N) fp32 (fp64 for fp64 input), symmetric, zero diagonal, clamped to >= 0.
    """
    probs = at_least_fp32(probs).clamp_min(TINY)
    batch, queries, num = probs.shape
    # r_i = sum_c p_i ln p_i + ln2 * sum_c p_i, so that JS_ij = (r_i + r_j - cross_ij) / 2
    row_term = (probs * torch.log(probs)).sum(1) + math.log(2.0) * probs.sum(1)
    divergence = torch.empty(batch, num, num, dtype=probs.dtype, device=probs.device)
    start = 0
    while start < num:
        stop = min(num, start + max(1, chunk_elements // (batch * queries * (num - start))))
        pair_sum = probs[:, :, start:stop, None] + probs[:, :, None, start:]  # (B, Q, rows, N - start)
        cross = torch.log(pair_sum).mul_(pair_sum).sum(1)  # (B, rows, N - start)
        block = 0.5 * (row_term[:, start:stop, None] + row_term[:, None, start:] - cross)
        divergence[:, start:stop, start:] = block
        divergence[:, start:, start:stop] = block.transpose(1, 2)
        start = stop
    divergence.clamp_(min=0)
    divergence.diagonal(dim1=1, dim2=2).zero_()
    return divergence


def normalized_affinity(divergence: torch.Tensor, sharpen_temperature: float, eps: float = EPS) -> torch.Tensor:
    """Row min-max of S = 1 - JS, row softmax(/P), row min-max again, in closed form (spec §3.3).

    S'_ij = (max_k JS_ik - JS_ij) / (max_k JS_ik - min_k JS_ik + eps), A'_ij = expm1(S'_ij / P) / expm1(1 / P).
    A constant row gives 0.

    Args:
        divergence: (B, N, N) divergences (rows = queries, columns = keys).
    Returns:
        (B, N, N) in [0, 1].
    """
    row_min, row_max = torch.aminmax(divergence, dim=-1, keepdim=True)
    inverse_scale = 1.0 / (sharpen_temperature * (row_max - row_min + eps))
    return torch.sub(row_max, divergence).mul_(inverse_scale).expm1_().mul_(1.0 / math.expm1(1.0 / sharpen_temperature))


def scaled_grid(grid: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """Grid of one scale: truncation per axis (released ``int(g * s)``), at least 1."""
    return max(1, int(grid[0] * scale)), max(1, int(grid[1] * scale))


def upsample_divergence(divergence: torch.Tensor, small_grid: Tuple[int, int], grid: Tuple[int, int]) -> torch.Tensor:
    """(B, N_s, N_s) symmetric -> (B, N, N) with two bilinear passes: keys (columns) first, then queries (rows).

    Equals U J U^T with U the bilinear (align_corners=False, no antialias) interpolation matrix (spec §3.4).
    The second pass yields (U J U^T)^T, which is returned as is: J (hence the result) is symmetric.
    """
    batch, num_small, _ = divergence.shape
    num = grid[0] * grid[1]
    keys_up = F.interpolate(divergence.reshape(batch, num_small, *small_grid), size=grid, mode="bilinear",
                            align_corners=False).reshape(batch, num_small, num)
    by_key = keys_up.transpose(1, 2).reshape(batch, num, *small_grid)
    return F.interpolate(by_key, size=grid, mode="bilinear", align_corners=False).reshape(batch, num, num)


def cdam_attention(logits: torch.Tensor, temperature: float = 0.1, sharpen_temperature: float = 0.1,
                   scales: Sequence[float] = DEFAULT_SCALES, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                   eps: float = EPS) -> torch.Tensor:
    """Multi-scale CDAM map W (spec §3.3-3.5): mean of the full-resolution and per-scale affinities.

    Args:
        logits: (B, Q, g_h, g_w) first-pass cosine logits over all queries (dataset names + ATP).
    Returns:
        (B, N, N) fp32 map in [0, 1]; not row-normalized (row sums >= ~1).
    """
    logits = at_least_fp32(logits)
    grid = tuple(logits.shape[-2:])
    probs = class_distributions(logits.flatten(2), temperature)
    total = normalized_affinity(js_divergence(probs, chunk_elements), sharpen_temperature, eps)
    for scale in scales:
        small_grid = scaled_grid(grid, scale)
        small_logits = F.interpolate(logits, size=small_grid, mode="bilinear", align_corners=False)
        small_js = js_divergence(class_distributions(small_logits.flatten(2), temperature), chunk_elements)
        total += normalized_affinity(upsample_divergence(small_js, small_grid, grid), sharpen_temperature, eps)
    return total.mul_(1.0 / (1 + len(scales)))
