"""CDAM fast path vs an independent, straightforward re-implementation of the released computation.

The reference spells out the released computation step by step: the KL-pair form of JS on full Q x N x N
tensors, the two-step softmax + min-max normalisation, explicit bilinear interpolation matrices (U J U^T), a
per-head (N+1) x (N+1) attention buffer with zero CLS row/column, and windows processed one at a time.
Everything runs in float64.
"""
import copy
import math
import unittest

import torch
import torch.nn.functional as F

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip, cdam_attention
from cdam_d2.cdam.modeling.sliding_window import crop_windows, window_boxes

EPS = 1e-8
SCALES = (0.25, 0.37, 0.5, 0.63, 0.75, 0.87)


def bilinear_matrix(src: int, dst: int, dtype=torch.float64) -> torch.Tensor:
    """(dst, src) 1-D bilinear interpolation, half-pixel centres, source coordinate clamped at 0."""
    matrix = torch.zeros(dst, src, dtype=dtype)
    for i in range(dst):
        coord = max((i + 0.5) * src / dst - 0.5, 0.0)
        low = int(math.floor(coord))
        high = min(low + 1, src - 1)
        frac = coord - low
        matrix[i, low] += 1 - frac
        matrix[i, high] += frac
    return matrix


def resize_maps(maps: torch.Tensor, size) -> torch.Tensor:
    """(C, h, w) -> (C, H, W) with the explicit separable interpolation matrices, in the dtype of ``maps``
    (float64 for integer or half input)."""
    dtype = maps.dtype if maps.dtype in (torch.float32, torch.float64) else torch.float64
    rows = bilinear_matrix(maps.shape[-2], size[0], dtype)
    cols = bilinear_matrix(maps.shape[-1], size[1], dtype)
    return torch.einsum("ia,cab,jb->cij", rows, maps.to(dtype), cols)


def released_js(probs: torch.Tensor) -> torch.Tensor:
    """(Q, N) -> (N, N): JS_ij = 1/2 KL(p_i || m_ij) + 1/2 KL(p_j || m_ij), m_ij = (p_i + p_j) / 2, with
    eps = 1e-8 inside every log, on broadcast Q x N x N tensors (the released form)."""
    p_i, p_j = probs[:, :, None], probs[:, None, :]
    mid = (p_i + p_j) / 2
    return (0.5 * (p_i * (torch.log(p_i + EPS) - torch.log(mid + EPS))).sum(0)
            + 0.5 * (p_j * (torch.log(p_j + EPS) - torch.log(mid + EPS))).sum(0))


def released_normalize(divergence: torch.Tensor, sharpen: float = 0.1) -> torch.Tensor:
    """1 - JS -> row min-max -> row softmax(/P) -> row min-max (two steps, as released)."""
    sim = 1 - divergence
    sim = (sim - sim.min(1, keepdim=True)[0]) / (sim.max(1, keepdim=True)[0] - sim.min(1, keepdim=True)[0] + EPS)
    attn = torch.softmax(sim / sharpen, dim=1)
    return (attn - attn.min(1, keepdim=True)[0]) / (attn.max(1, keepdim=True)[0] - attn.min(1, keepdim=True)[0] + EPS)


def released_cdam_map(logits: torch.Tensor, temperature: float = 0.1, sharpen: float = 0.1,
                      dtype=torch.float64) -> torch.Tensor:
    """(Q, g_h, g_w) first-pass logits -> (N, N) W for one window, evaluated in ``dtype``: the mean of the
    full-resolution map and the six scale maps, each the normalised 1 - JS of the class softmax (/T) of the
    logits resized to floor(g * s) per axis, its divergences upsampled back as U J U^T."""
    logits = logits.to(dtype)
    grid_h, grid_w = logits.shape[-2:]
    maps = [released_normalize(released_js(torch.softmax(logits.flatten(1) / temperature, 0)), sharpen)]
    for scale in SCALES:
        small_h, small_w = max(1, int(grid_h * scale)), max(1, int(grid_w * scale))
        small = resize_maps(logits, (small_h, small_w))
        small_js = released_js(torch.softmax(small.flatten(1) / temperature, 0))
        upsample = torch.kron(bilinear_matrix(small_h, grid_h, dtype), bilinear_matrix(small_w, grid_w, dtype))
        maps.append(released_normalize(upsample @ small_js @ upsample.t(), sharpen))
    return torch.stack(maps).mean(0)


def reference_tokens(visual, window: torch.Tensor):
    """(3, h, w) -> tokens entering the last block (1, T, D) and the grid, one window at a time."""
    patches = visual.conv1(window[None])
    grid = tuple(patches.shape[-2:])
    tokens = torch.cat([visual.class_embedding.view(1, 1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
    table = visual.positional_embedding
    if grid != tuple(visual.grid_size):
        g0 = visual.grid_size
        patch_table = table[1:].reshape(1, g0[0], g0[1], -1).permute(0, 3, 1, 2)
        patch_table = F.interpolate(patch_table, scale_factor=((grid[0] + 0.1) / g0[0], (grid[1] + 0.1) / g0[1]),
                                    mode="bicubic", align_corners=False)
        table = torch.cat([table[:1], patch_table.flatten(2)[0].t()])
    tokens = visual.ln_pre(tokens + table)
    for block in visual.transformer.resblocks[:-1]:
        tokens = block(tokens)
    return tokens, grid


def reference_last_block(visual, tokens: torch.Tensor, head_buffer: torch.Tensor) -> torch.Tensor:
    """Last block with a per-head (H, T, T) attention buffer, residual and FFN -> (N, E) unit features."""
    block = visual.transformer.resblocks[-1]
    width = tokens.shape[-1]
    heads = head_buffer.shape[0]
    normed = block.ln_1(tokens[0])
    values = normed @ block.attn.in_proj_weight[2 * width:].t() + block.attn.in_proj_bias[2 * width:]
    per_head = values.reshape(-1, heads, width // heads)
    attended = torch.cat([head_buffer[h] @ per_head[:, h] for h in range(heads)], dim=1)
    hidden = tokens[0] + block.attn.out_proj(attended)
    hidden = hidden + block.mlp(block.ln_2(hidden))
    return F.normalize((visual.ln_post(hidden) @ visual.proj)[1:], dim=-1)


def reference_segmentation(visual, image, output_size, dataset_text, atp_text, crop, stride, alpha=2.5):
    """Sequential-window CDAM -> (per-window patch logits list, merged logits, threshold, label map)."""
    heads = visual.transformer.resblocks[-1].attn.num_heads
    height, width = image.shape[-2:]

    def spans(length):
        count = max(length - crop + stride - 1, 0) // stride + 1
        return [(max(min(i * stride + crop, length) - crop, 0), min(i * stride + crop, length)) for i in range(count)]

    canvas = torch.zeros(dataset_text.shape[0], height, width, dtype=torch.float64)
    count = torch.zeros(1, height, width, dtype=torch.float64)
    window_logits, threshold = [], None
    all_text = torch.cat([dataset_text, atp_text])
    for y1, y2 in spans(height):
        for x1, x2 in spans(width):
            tokens, grid = reference_tokens(visual, image[:, y1:y2, x1:x2])
            num_tokens = tokens.shape[1]
            identity = torch.eye(num_tokens, dtype=torch.float64).expand(heads, -1, -1)
            first = reference_last_block(visual, tokens, identity)
            weights = released_cdam_map((first @ all_text.t()).t().reshape(-1, *grid))
            buffer = torch.zeros(heads, num_tokens, num_tokens, dtype=torch.float64)
            buffer[:, 1:, 1:] = weights
            logits = (reference_last_block(visual, tokens, buffer) @ dataset_text.t()).t().reshape(-1, *grid)
            window_logits.append(logits)
            canvas[:, y1:y2, x1:x2] += resize_maps(logits, (y2 - y1, x2 - x1))
            count[:, y1:y2, x1:x2] += 1
            probs = torch.softmax(50 * logits.flatten(1), dim=0)
            entropy = -(probs * torch.log2(probs)).nan_to_num().sum(0)
            threshold = alpha * 0.5 / ((entropy.min() + entropy.max()) / 2)  # overwritten: last window wins
    merged = resize_maps(canvas / count, output_size)
    probs = torch.softmax(50 * merged, dim=0)
    labels = probs.argmax(0)
    labels[probs.max(0)[0] < threshold] = 0
    return window_logits, merged, float(threshold), labels


class TestAttentionMatchesReleased(unittest.TestCase):
    def test_fast_map_equals_released_form(self):
        generator = torch.Generator().manual_seed(0)
        for grid in [(20, 20), (9, 13)]:
            logits = 0.3 * torch.randn(2, 37, *grid, generator=generator, dtype=torch.float64)
            references = [released_cdam_map(window_logits) for window_logits in logits]
            for fast in [cdam_attention(logits, chunk_elements=4096), cdam_attention(logits.float()).double()]:
                for window in range(2):
                    self.assertLessEqual((fast[window] - references[window]).abs().max().item(), 1e-5)


class TestPipelineMatchesReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        model, _, _ = build_clip("tiny:ViT-B-16", "random", seed=3)
        cls.visual = copy.deepcopy(model.visual).double().eval()
        generator = torch.Generator().manual_seed(1)
        cls.dataset_text = F.normalize(torch.randn(6, model.visual.output_dim, generator=generator,
                                                   dtype=torch.float64), dim=-1)
        cls.atp_text = F.normalize(torch.randn(9, model.visual.output_dim, generator=generator,
                                               dtype=torch.float64), dim=-1)

    def check(self, image_size, output_size, crop, stride):
        image = torch.randn(3, *image_size, generator=torch.Generator().manual_seed(sum(image_size)),
                            dtype=torch.float64)
        text = TextQueries(self.dataset_text, self.atp_text, tuple(range(6)), 6)
        args = (self.visual, image, output_size, self.dataset_text, self.atp_text, crop, stride)
        with torch.no_grad():
            ref_windows, ref_merged, released_threshold, ref_labels = reference_segmentation(*args)
            # Random weights make the released threshold cover every pixel; also check a threshold that
            # splits the image (placed in a gap of the max probabilities near the median) so both label kinds are compared.
            values = torch.softmax(50 * ref_merged, dim=0).max(0)[0].flatten().sort()[0]
            gaps = values[1:] - values[:-1]
            middle = len(values) // 2 + int(torch.nonzero(gaps[len(values) // 2:] > 1e-6)[0])  # a clear gap
            split_alpha = 2.5 * (values[middle] + values[middle + 1]).item() / 2 / released_threshold
            split_labels = reference_segmentation(*args, alpha=split_alpha)[3]
            self.assertTrue(0 < (split_labels == 0).sum() < split_labels.numel())
            for alpha, labels in [(2.5, ref_labels), (split_alpha, split_labels)]:
                segmentor = CDAMSegmentor(DenseCLIPEncoder(self.visual), crop=crop, stride=stride, alpha=alpha)
                result = segmentor(image, output_size, text)
                self.assertTrue(torch.equal(result.scores.argmax(0), labels))
            fast_windows = segmentor.window_logits(crop_windows(image, window_boxes(*image_size, crop, stride)), text)
        self.assertEqual(len(ref_windows), fast_windows.shape[0])
        for ref, fast in zip(ref_windows, fast_windows):
            self.assertLessEqual((ref - fast).abs().max().item(), 1e-4)
        self.assertLessEqual((ref_merged - result.logits).abs().max().item(), 1e-4)
        self.assertAlmostEqual(released_threshold * split_alpha / 2.5, result.threshold,
                               delta=1e-4 * result.threshold)
        # the fp32 fast path (as run on CPU) stays within the same tolerance of the fp64 reference
        visual32 = copy.deepcopy(self.visual).float()
        text32 = TextQueries(self.dataset_text.float(), self.atp_text.float(), tuple(range(6)), 6)
        with torch.no_grad():
            result32 = CDAMSegmentor(DenseCLIPEncoder(visual32), crop=crop, stride=stride)(image.float(), output_size,
                                                                                          text32)
        self.assertLessEqual((ref_merged - result32.logits.double()).abs().max().item(), 1e-4)

    def test_square_one_window(self):
        self.check((64, 64), (50, 50), crop=64, stride=32)

    def test_non_square_two_windows(self):
        self.check((64, 90), (40, 57), crop=64, stride=32)

    def test_several_windows_both_axes(self):
        self.check((96, 112), (96, 112), crop=64, stride=32)


if __name__ == "__main__":
    unittest.main()
