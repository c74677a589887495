"""The peers' last blocks, position resampling and window padding, each against a small computation written here
from the block's weights (the released codes were compared on identical ViT-B/16 weights; see docs/PEERS.md)."""
import unittest

import torch
import torch.nn.functional as F

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip
from cdam_d2.cdam.modeling.sliding_window import patch_padding, window_boxes
from cdam_d2.layers.pos_embed import resample_patch_positions


def unit_rows(rows, dim, seed):
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def grid_of(table, grid):
    """(G_h*G_w, C) row-major table -> (1, C, G_h, G_w)."""
    return table.reshape(1, *grid, -1).permute(0, 3, 1, 2)


def last_block_by_hand(block, tokens, attention, reduced):
    """One open_clip block from its weights with a given per-head attention rule: (B, T, D) -> (B, T, D)."""
    heads = block.attn.num_heads
    width = tokens.shape[-1]
    normed = F.layer_norm(tokens, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    qkv = normed @ block.attn.in_proj_weight.t() + block.attn.in_proj_bias
    q, k, v = (part.unflatten(-1, (heads, -1)).transpose(1, 2) for part in qkv.chunk(3, dim=-1))
    out = (attention(q, k) @ v).transpose(1, 2).flatten(2)
    out = out @ block.attn.out_proj.weight.t() + block.attn.out_proj.bias
    if reduced:
        return out
    hidden = tokens + out
    return hidden + block.mlp(F.layer_norm(hidden, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps))


def features_by_hand(visual, tokens):
    """ln_post, proj, unit norm, CLS dropped: (B, T, D) -> (B, N, E)."""
    normed = F.layer_norm(tokens, tokens.shape[-1:], visual.ln_post.weight, visual.ln_post.bias, visual.ln_post.eps)
    return F.normalize((normed @ visual.proj)[:, 1:], dim=-1)


def gaussian_bias(grid, sigma):
    """NACLIP's window: exp(-squared grid distance / (2 sigma^2)) between patches, 0 around the CLS token."""
    cells = [(row, col) for row in range(grid[0]) for col in range(grid[1])]
    bias = torch.zeros(len(cells) + 1, len(cells) + 1)
    for i, (r1, c1) in enumerate(cells):
        for j, (r2, c2) in enumerate(cells):
            bias[i + 1, j + 1] = torch.exp(torch.tensor(-((r1 - r2) ** 2 + (c1 - c2) ** 2) / (2 * sigma ** 2)))
    return bias


def self_self(features, temperature):
    """GEM: one iteration of normalised self-attention, then its self-attention map."""
    unit = F.normalize(features, dim=-1)
    unit = F.normalize(torch.softmax(temperature * unit @ unit.transpose(-2, -1), -1) @ unit, dim=-1)
    return torch.softmax(temperature * unit @ unit.transpose(-2, -1), -1)


class TestPositionResampling(unittest.TestCase):
    def test_size_antialias_is_gems_resize_and_differs_from_scale_factors(self):
        table = torch.randn(6 * 6, 8, generator=torch.Generator().manual_seed(0))
        for target in ((9, 13), (4, 5)):
            expected = F.interpolate(grid_of(table, (6, 6)), size=target, mode="bicubic", antialias=True)
            ours = resample_patch_positions(table, (6, 6), target, "size_antialias")
            torch.testing.assert_close(ours, expected[0].flatten(1).t(), rtol=0, atol=1e-6)
            scale = resample_patch_positions(table, (6, 6), target, "scale_factor")
            self.assertGreater((scale - ours).abs().max().item(), 1e-3)
        with self.assertRaises(ValueError):
            resample_patch_positions(table, (6, 6), (9, 9), "nearest")

    def test_auto_is_each_bases_release(self):
        visual = build_clip("tiny:ViT-B-16", "random", seed=1)[0].visual
        table, trained, grid = visual.positional_embedding.detach(), tuple(visual.grid_size), (5, 7)
        by_size = F.interpolate(grid_of(table[1:], trained), size=grid, mode="bicubic", antialias=True)
        by_scale = F.interpolate(grid_of(table[1:], trained), mode="bicubic", align_corners=False,
                                 scale_factor=((grid[0] + 0.1) / trained[0], (grid[1] + 0.1) / trained[1]))
        for base, resampling, expected in (("gem", "auto", by_size), ("sclip", "auto", by_scale),
                                           ("gem", "scale_factor", by_scale), ("maskclip", "size_antialias", by_size)):
            positions = DenseCLIPEncoder(visual, base, pos_embed_resampling=resampling).positional_embedding(grid)
            torch.testing.assert_close(positions[1:], expected[0].flatten(1).t(), rtol=0, atol=1e-6)
            self.assertTrue(torch.equal(positions[0], table[0]))
        with self.assertRaises(ValueError):
            DenseCLIPEncoder(visual, "gem", pos_embed_resampling="bilinear")


class TestLastBlock(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.visual = build_clip("tiny:ViT-B-16", "random", seed=4)[0].visual
        generator = torch.Generator().manual_seed(2)
        with torch.no_grad():  # random biases and LayerNorms, so that no term vanishes by construction
            for name, parameter in cls.visual.named_parameters():
                if name.endswith("bias") or ".ln_" in name:
                    parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        cls.images = torch.randn(2, 3, 48, 80, generator=generator)

    def first_pass(self, base, last_block="auto", **options):
        encoder = DenseCLIPEncoder(self.visual, base, last_block=last_block, **options)
        with torch.no_grad():
            state = encoder.forward_to_last_block(self.images)
            return encoder.first_pass(state), state

    def test_attention_rules_with_and_without_residual(self):
        scale = (self.visual.transformer.width // self.visual.transformer.resblocks[-1].attn.num_heads) ** -0.5

        def softmax_of(a, b):
            return torch.softmax(scale * a @ b.transpose(-2, -1), dim=-1)

        rules = {
            "clip": lambda q, k: softmax_of(q, k),
            "maskclip": lambda q, k: torch.eye(q.shape[-2]).expand(*q.shape[:2], -1, -1),
            "sclip": lambda q, k: softmax_of(q, q) + softmax_of(k, k),
            "clearclip": lambda q, k: softmax_of(q, q),
            "naclip": lambda q, k: torch.softmax(scale * k @ k.transpose(-2, -1) + gaussian_bias((3, 5), 5.0), -1),
        }
        released_reduced = {"clearclip", "naclip"}
        block = self.visual.transformer.resblocks[-1]
        for base, rule in rules.items():
            for last_block in ("auto", "full", "reduced"):
                with self.subTest(base=base, last_block=last_block):
                    ours, state = self.first_pass(base, last_block)
                    reduced = last_block == "reduced" or (last_block == "auto" and base in released_reduced)
                    with torch.no_grad():
                        expected = features_by_hand(self.visual,
                                                    last_block_by_hand(block, state.tokens, rule, reduced))
                    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-6)
        with self.assertRaises(ValueError):
            DenseCLIPEncoder(self.visual, "clip", last_block="residual")

    def test_gem_path_and_its_reduced_form(self):
        blocks = self.visual.transformer.resblocks

        def gem_attention(block, tokens):  # GEM's self-self attention of one block on the original path
            width = tokens.shape[-1]
            normed = F.layer_norm(tokens, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
            qkv = normed @ block.attn.in_proj_weight.t() + block.attn.in_proj_bias
            q, k, v = (part.unflatten(-1, (block.attn.num_heads, -1)).transpose(1, 2) for part in qkv.chunk(3, -1))
            temperature = normed.norm(dim=-1).mean(-1).view(-1, 1, 1, 1) * q.shape[-1] ** -0.5
            weights = (self_self(q, temperature) + self_self(k, temperature) + self_self(v, temperature)) / 3
            out = (weights @ v).transpose(1, 2).flatten(2)
            return out @ block.attn.out_proj.weight.t() + block.attn.out_proj.bias

        with torch.no_grad():
            for depth in (1, 2, 3):
                full, state = self.first_pass("gem", gem_depth=depth)
                tokens = DenseCLIPEncoder(self.visual, "gem").embed(self.images)[0]  # GEM's position resampling
                path = None
                for index, block in enumerate(blocks):
                    if index == len(blocks) - depth:
                        path = tokens
                    if path is not None:
                        path = path + gem_attention(block, tokens)
                    tokens = block(tokens)
                torch.testing.assert_close(full, features_by_hand(self.visual, path), rtol=0, atol=2e-6)
                reduced, state = self.first_pass("gem", "reduced", gem_depth=depth)
                expected = features_by_hand(self.visual, gem_attention(blocks[-1], state.tokens))
                torch.testing.assert_close(reduced, expected, rtol=0, atol=2e-6)
                self.assertIsNone(state.gem_tokens)  # the reduced path does not run the earlier GEM blocks

    def test_second_pass_base_mode_follows_the_block(self):
        encoder = DenseCLIPEncoder(self.visual, "clip", last_block="reduced")
        weights = torch.softmax(torch.randn(2, 15, 15, generator=torch.Generator().manual_seed(3)), -1)
        block = self.visual.transformer.resblocks[-1]
        with torch.no_grad():
            state = encoder.forward_to_last_block(self.images)
            map_with_cls = F.pad(weights, (1, 0, 1, 0))[:, None]
            expected = {reduced: features_by_hand(self.visual, last_block_by_hand(
                block, state.tokens, lambda q, k: map_with_cls, reduced)) for reduced in (True, False)}
            torch.testing.assert_close(encoder.second_pass(state, weights, "base"), expected[True], rtol=0, atol=2e-6)
            torch.testing.assert_close(encoder.second_pass(state, weights, "released"), expected[False], rtol=0,
                                       atol=2e-6)


class TestWindows(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.visual = build_clip("tiny:ViT-B-16", "random", seed=5)[0].visual
        cls.text = TextQueries(unit_rows(4, 32, 1), unit_rows(0, 32, 2), (0, 1, 2, 3), 4)

    def test_patch_padding_is_clearclips(self):
        for height in range(30, 50):
            for width in (32, 33, 47, 63):
                left_right, top_bottom = (16 - width % 16) % 16, (16 - height % 16) % 16
                expected = (left_right // 2, left_right - left_right // 2, top_bottom // 2,
                            top_bottom - top_bottom // 2)
                self.assertEqual(patch_padding(height, width, (16, 16)), expected)

    def merged(self, image, **options):
        segmentor = CDAMSegmentor(DenseCLIPEncoder(self.visual, "clearclip"), use_cdam=False, **options)
        with torch.no_grad():
            return segmentor.merged_logits(image, self.text)[0], segmentor

    def window_logits_by_hand(self, segmentor, window):
        """(3, h, w) window -> (Q, g_h, g_w) cosine logits."""
        with torch.no_grad():
            encoder = segmentor.encoder
            features = encoder.first_pass(encoder.forward_to_last_block(window[None]))[0]
        grid = (window.shape[-2] // 16, window.shape[-1] // 16)
        return (features @ self.text.dataset.t()).t().reshape(-1, *grid)

    def test_padded_window_is_cropped_back(self):
        image = torch.randn(3, 45, 70, generator=torch.Generator().manual_seed(4))
        padded_merge, segmentor = self.merged(image, crop=96, stride=48, pad_windows=True)
        # 45 x 70 -> 48 x 80: 3 rows (1 on top, the odd one at the bottom) and 10 columns (5 each side)
        self.assertEqual(patch_padding(45, 70, (16, 16)), (5, 5, 1, 2))
        logits = self.window_logits_by_hand(segmentor, F.pad(image, (5, 5, 1, 2)))
        expected = F.interpolate(logits[None], size=(48, 80), mode="bilinear")[0, :, 1:46, 5:75]
        torch.testing.assert_close(padded_merge, expected, rtol=0, atol=1e-5)
        floored, _ = self.merged(image, crop=96, stride=48)  # default: the patch conv drops the remainder
        expected = F.interpolate(self.window_logits_by_hand(segmentor, image)[None], size=(45, 70), mode="bilinear")
        torch.testing.assert_close(floored, expected[0], rtol=0, atol=1e-5)
        self.assertGreater((floored - padded_merge).abs().max().item(), 1e-3)

    def test_crop_zero_is_the_whole_image(self):
        image = torch.randn(3, 64, 150, generator=torch.Generator().manual_seed(5))
        self.assertEqual(window_boxes(64, 150, 0, 112), [(0, 64, 0, 150)])
        with self.assertRaises(ValueError):
            window_boxes(64, 150, -1, 112)
        whole, segmentor = self.merged(image, crop=0, stride=112)
        expected = F.interpolate(self.window_logits_by_hand(segmentor, image)[None], size=(64, 150), mode="bilinear")
        torch.testing.assert_close(whole, expected[0], rtol=0, atol=1e-5)

    def test_a_stride_above_the_crop_is_refused(self):
        # with crop 64 and stride 80 the windows of a 200-pixel side would start at 0, 80, 136: 64..80 uncovered
        for crop, stride in ((64, 80), (64, 0)):
            message = rf"MODEL.CDAM.SLIDE_STRIDE {stride} must be between 1 and MODEL.CDAM.SLIDE_CROP \({crop}\)"
            with self.subTest(stride=stride), self.assertRaisesRegex(ValueError, message):
                window_boxes(200, 200, crop, stride)
        with self.assertRaisesRegex(ValueError, "SLIDE_STRIDE 80"):
            CDAMSegmentor(DenseCLIPEncoder(self.visual), crop=64, stride=80)
        for height in (64, 100, 200):  # stride = crop tiles the side, the last window shifted back inside
            boxes = window_boxes(height, 64, 64, 64)
            covered = torch.zeros(height, dtype=torch.bool)
            for y1, y2, _, _ in boxes:
                covered[y1:y2] = True
            self.assertTrue(covered.all())

    def test_forward_keeps_no_autograd_graph(self):
        visual = build_clip("tiny:ViT-B-16", "random", seed=5)[0].visual.requires_grad_(True)
        segmentor = CDAMSegmentor(DenseCLIPEncoder(visual, "clearclip"), crop=64, stride=32)
        image = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(6), requires_grad=True)
        result = segmentor(image, (40, 60), self.text)
        self.assertTrue(torch.is_grad_enabled())
        for tensor in (result.scores, result.logits, result.probabilities):
            self.assertFalse(tensor.requires_grad)
            self.assertIsNone(tensor.grad_fn)

    def test_padded_windows_entropy_covers_image_patches_only(self):
        """Padding adds less than one patch per side, half on each side: every patch of a padded window holds
        pixels of the image, so the entropy threshold reads no padding-only patch; it is the midpoint of the
        patch entropies of the padded windows, computed here."""
        for size in range(1, 80):
            left, right, top, bottom = patch_padding(size, size, (16, 16))
            self.assertTrue(max(left, right, top, bottom) <= 8 and (size + top + bottom) % 16 == 0)
            for start in range(0, size + top + bottom, 16):  # each patch row overlaps the image's rows
                self.assertGreater(min(start + 16, top + size) - max(start, top), 0)
        image = torch.randn(3, 75, 106, generator=torch.Generator().manual_seed(7))
        for source in ("last_window", "image"):
            with self.subTest(source=source):
                segmentor = CDAMSegmentor(DenseCLIPEncoder(self.visual, "clearclip"), crop=56, stride=40,
                                          pad_windows=True, threshold_source=source)
                with torch.no_grad():
                    threshold = segmentor.merged_logits(image, self.text)[1]
                    boxes = window_boxes(75, 106, 56, 40)
                    windows = torch.stack([F.pad(image[:, y1:y2, x1:x2], (4, 4, 4, 4)) for y1, y2, x1, x2 in boxes])
                    logits = segmentor.window_logits(windows, self.text)  # (B, Q, 4, 4): 56 -> 64 pixels
                self.assertEqual(tuple(logits.shape[-2:]), (4, 4))
                probs = torch.softmax(50.0 * logits.flatten(2).double(), dim=1)
                entropy = -(probs * torch.log2(probs)).sum(dim=1)
                read = entropy[-1] if source == "last_window" else entropy
                expected = 2.5 * 0.5 / (0.5 * (read.min() + read.max())).item()
                self.assertAlmostEqual(threshold, expected, places=5)


if __name__ == "__main__":
    unittest.main()
