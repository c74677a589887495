"""The CDAM attention map (patch affinities from the Jensen-Shannon divergence of the patches' class distributions,
at full and reduced resolution) in fp32 (the release works in fp16, where its eps of 1e-8 vanishes), without
materialising any Q x N x N tensor.

Shapes: B windows, Q queries, grid (g_h, g_w), N = g_h * g_w patches.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

EPS = 1e-8
DEFAULT_SCALES = (0.25, 0.37, 0.5, 0.63, 0.75, 0.87)
# Pair x class terms per JS chunk (B x Q x rows x columns), two buffers of that size. 0 = by device: on CPU
# 2**20 (4 MiB fp32, cache-sized), on GPUs 2**26 (256 MiB: few large kernels instead of many launches).
DEFAULT_CHUNK_ELEMENTS = 0
CHUNK_ELEMENTS_BY_DEVICE = {"cpu": 2 ** 20, "cuda": 2 ** 26}


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 (used by tests) are kept."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def class_distributions(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, Q, N) cosine logits -> (B, Q, N) softmax over queries of logits / T, fp32 (fp64 for fp64 logits).
    Evaluated in fp64 (O(QN), cheap) so that the probabilities carry only their final rounding."""
    logits = at_least_fp32(logits)
    return torch.softmax(logits.double() / temperature, dim=1).to(logits.dtype)


def js_divergence(probs: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, eps: float = EPS) -> torch.Tensor:
    """Jensen-Shannon divergence between all patch pairs (natural log, the released eps inside every log included).

    The released KL-pair expression regroups exactly into one term per class and pair,

        JS_ij = sum_c [ b_i(c) + b_j(c) - m(c) ln((m(c) + eps) / v(c)) ],
        m = (p_i + p_j) / 2,  b = p ln((p + eps) / v) / 2,  v(c) = max_k p_k(c) + eps,

    (the reference v cancels: the three terms carry p_i/2 + p_j/2 - m = 0 times ln v), and every term is >= 0
    (x ln(x + eps) is convex). Summing small non-negative terms keeps fp32 accurate, where the entropy form
    H(m) - (H(p_i) + H(p_j)) / 2 would cancel sums of about ln Q; and since m + eps <= v, the logs are of
    numbers <= 1 whose size (hence rounding) is at most that of ln(m + eps), and near 0 for flat distributions.
    The per-patch b costs O(QN); the pair work is one log per class and pair, for the upper triangle in chunks
    of query rows (about ``chunk_elements`` pairs x classes at a time, 0 = by device; no Q x N x N tensor), then
    mirrored, which makes the result exactly symmetric.

    Args:
        probs: (B, Q, N) class distributions (columns sum to 1).
    Returns:
        (B, N, N) fp32 (fp64 for fp64 input), symmetric, >= 0, exactly 0 between equal distributions.
    """
    probs = at_least_fp32(probs).clamp_min(0)
    batch, queries, num = probs.shape
    if chunk_elements <= 0:
        chunk_elements = CHUNK_ELEMENTS_BY_DEVICE.get(probs.device.type, CHUNK_ELEMENTS_BY_DEVICE["cpu"])
    precise = probs.double()  # the O(QN) per-patch terms in fp64, rounded once
    reference = precise.amax(dim=2, keepdim=True) + eps
    scaled_half = (0.5 * precise / reference).to(probs.dtype)  # h / v, h = p / 2
    scaled_half_eps = ((0.5 * precise + eps) / reference).to(probs.dtype)  # (h + eps) / v
    own_terms = (0.5 * precise * torch.log((precise + eps) / reference)).to(probs.dtype)  # b
    half = 0.5 * probs
    divergence = torch.empty(batch, num, num, dtype=probs.dtype, device=probs.device)
    chunks, start = [], 0  # query rows [start, stop) against key columns [start, N)
    while start < num:
        stop = min(num, start + max(1, chunk_elements // (batch * queries * (num - start))))
        chunks.append((start, stop))
        start = stop
    size = max(batch * queries * (stop - start) * (num - start) for start, stop in chunks)
    buffers = torch.empty(2, size, dtype=probs.dtype, device=probs.device)  # reused: no allocation per chunk
    for start, stop in chunks:
        rows, columns = slice(start, stop), slice(start, None)
        shape = (batch, queries, stop - start, num - start)
        mean, terms = (buffer[:batch * queries * (stop - start) * (num - start)].view(shape) for buffer in buffers)
        torch.add(half[:, :, rows, None], half[:, :, None, columns], out=mean)  # m
        torch.add(scaled_half[:, :, rows, None], scaled_half_eps[:, :, None, columns], out=terms).log_()
        torch.addcmul(own_terms[:, :, rows, None], mean, terms, value=-1.0, out=terms)  # b_i - m ln((m + eps) / v)
        divergence[:, rows, columns] = terms.add_(own_terms[:, :, None, columns]).sum(1)
    upper = divergence.triu_(1)  # computed for j >= i; mirrored, so the result is exactly symmetric
    divergence = (upper + upper.transpose(1, 2)).clamp_(min=0)
    # Bitwise equal distributions diverge by exactly 0 (as in the released form), not by a rounding residue
    # that a constant row's min-max would blow up (constant images, padding).
    for window, window_probs in enumerate(probs):
        same = torch.unique(window_probs.t(), dim=0, return_inverse=True)[1]
        divergence[window].masked_fill_(same[:, None] == same[None, :], 0)
    return divergence


def normalized_affinity(divergence: torch.Tensor, sharpen_temperature: float, eps: float = EPS) -> torch.Tensor:
    """Row min-max of S = 1 - JS, row softmax(/P), row min-max again, in closed form.

    With S'_ij = (max_k JS_ik - JS_ij) / (range_i + eps) (in [0, r_i], r_i = range_i / (range_i + eps)), the
    softmax denominator Z_i = sum_k exp(S'_ik / P) cancels up to the released eps of the second min-max:

        A'_ij = expm1(S'_ij / P) / (expm1(r_i / P) + eps * Z_i),

    which is the released two-step result exactly (and never forms 1 - JS, which would round JS to 6e-8). A
    constant row gives 0. The N x N numerators take exp(x) - 1, vectorized on CPUs where expm1 is not (8x
    faster there); with x in [0, 1/P], its absolute error after the division is that of expm1 (map errors
    against float64 unchanged to three digits on peaked and flat inputs).

    Args:
        divergence: (B, N, N) divergences (rows = queries, columns = keys).
    Returns:
        (B, N, N) in [0, 1].
    """
    row_min, row_max = torch.aminmax(divergence, dim=-1, keepdim=True)
    spread = row_max - row_min
    inverse_scale = 1.0 / (sharpen_temperature * (spread + eps))
    affinity = torch.sub(row_max, divergence).mul_(inverse_scale).exp_().sub_(1.0)
    partition = affinity.sum(dim=-1, keepdim=True) + divergence.shape[-1]  # Z_i = sum_k exp(S'_ik / P)
    denominator = torch.expm1(spread * inverse_scale) + eps * partition
    return affinity.div_(denominator)


def scaled_grid(grid: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """Grid of one scale: truncation per axis (released ``int(g * s)``), at least 1."""
    return max(1, int(grid[0] * scale)), max(1, int(grid[1] * scale))


def upsample_divergence(divergence: torch.Tensor, small_grid: Tuple[int, int], grid: Tuple[int, int]) -> torch.Tensor:
    """(B, N_s, N_s) symmetric -> (B, N, N) with two bilinear passes: keys (columns) first, then queries (rows).

    Equals U J U^T with U the bilinear (align_corners=False, no antialias) interpolation matrix.
    As released, the divergence (not the affinity) is resampled, before 1 - JS and both normalisations.
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
    """Multi-scale CDAM map W: equal-weight mean of the full-resolution and per-scale affinities.

    The divergences (the O(Q N^2) work) and the normalisation are computed in the input precision (fp32 for
    half/fp32 logits); the cheap bilinear resampling around them, logits down (O(Q N)) and divergences up
    (O(N^2)), runs in fp64, which halves the map's error on peaked distributions.

    Args:
        logits: (B, Q, g_h, g_w) first-pass cosine logits over all queries (dataset names + ATP).
    Returns:
        (B, N, N) fp32 map in [0, 1] (fp64 for fp64 logits); not row-normalized (row sums >= ~1).
    """
    logits = at_least_fp32(logits)
    grid = tuple(logits.shape[-2:])
    probs = class_distributions(logits.flatten(2), temperature)
    total = normalized_affinity(js_divergence(probs, chunk_elements, eps), sharpen_temperature, eps)
    precise_logits = logits.double()
    for scale in scales:
        small_grid = scaled_grid(grid, scale)
        small_logits = F.interpolate(precise_logits, size=small_grid, mode="bilinear", align_corners=False)
        small_probs = class_distributions(small_logits.flatten(2), temperature).to(logits.dtype)
        small_js = js_divergence(small_probs, chunk_elements, eps).double()
        upsampled = upsample_divergence(small_js, small_grid, grid).to(logits.dtype)
        total += normalized_affinity(upsampled, sharpen_temperature, eps)
    return total.mul_(1.0 / (1 + len(scales)))
