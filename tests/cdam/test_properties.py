"""Checkable properties of CDAM (text bank, resize and windows, class distributions, JS, normalised maps,
thresholds, degenerate inputs) on random inputs and tiny random CLIP towers."""
import math
import unittest

import open_clip
import torch
import torch.nn.functional as F

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip
from cdam_d2.cdam.modeling.cdam_attention import (cdam_attention, class_distributions, js_divergence,
                                                  normalized_affinity, scaled_grid, upsample_divergence)
from cdam_d2.cdam.modeling.dense_clip import BASE_VARIANTS
from cdam_d2.cdam.modeling.postprocess import background_threshold, class_probabilities, encode_background
from cdam_d2.cdam.resize import resized_shape
from cdam_d2.cdam.modeling.sliding_window import merge_windows, window_boxes
from tests.cdam.test_reference import bilinear_matrix, reference_last_block, released_js, released_normalize


def random_logits(*shape, seed=0, scale=0.3, dtype=torch.float32):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def unit_rows(rows, dim, seed):
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


class TestResizeAndWindows(unittest.TestCase):
    def test_resize_examples(self):  # (W, H) -> (W, H)
        for (w0, h0), expected in {(500, 375): (597, 448), (500, 333): (673, 448), (640, 480): (597, 448),
                                   (640, 427): (671, 448), (375, 500): (448, 597)}.items():
            height, width = resized_shape(h0, w0)
            self.assertEqual((width, height), expected)
        self.assertEqual(resized_shape(100, 1000), (205, 2048))  # long-side cap binds above ratio 4.57
        self.assertEqual(resized_shape(37, 53, short_side=0), (37, 53))

    def test_window_lists_and_counts(self):
        self.assertEqual(window_boxes(448, 597, 448, 224), [(0, 448, 0, 448), (0, 448, 149, 597)])
        self.assertEqual([box[2:] for box in window_boxes(448, 673, 448, 224)], [(0, 448), (224, 672), (225, 673)])
        self.assertEqual([box[2:] for box in window_boxes(448, 671, 448, 224)], [(0, 448), (223, 671)])
        self.assertEqual(window_boxes(300, 200, 448, 224), [(0, 300, 0, 200)])
        boxes = window_boxes(448, 597, 448, 224)
        merged = merge_windows(torch.stack([torch.ones(1, 28, 28), 3 * torch.ones(1, 28, 28)]), boxes, (448, 597))
        self.assertTrue(torch.allclose(merged[0, :, 149:448], torch.full((448, 299), 2.0)))  # overlap averaged
        self.assertTrue(torch.equal(merged[0, :, :149], torch.ones(448, 149)))
        self.assertTrue(torch.equal(merged[0, :, 448:], torch.full((448, 149), 3.0)))


class TestCDAMMap(unittest.TestCase):
    def test_class_distributions(self):
        probs = class_distributions(random_logits(2, 101, 50), 0.1)
        self.assertEqual(probs.shape, (2, 101, 50))
        self.assertGreaterEqual(probs.min().item(), 0)
        self.assertLessEqual((probs.sum(1) - 1).abs().max().item(), 1e-6)

    def test_js_properties_and_entropy_form(self):
        probs = class_distributions(random_logits(2, 101, 60, seed=1), 0.1)
        fast = js_divergence(probs, chunk_elements=3000)
        self.assertTrue(torch.equal(fast, fast.transpose(1, 2)))
        self.assertTrue(torch.equal(fast.diagonal(dim1=1, dim2=2), torch.zeros(2, 60)))
        self.assertGreaterEqual(fast.min().item(), 0)
        self.assertLessEqual(fast.max().item(), math.log(2))
        released = released_js(probs[0].double())
        self.assertEqual((released - released.t()).abs().max().item(), 0)
        self.assertLessEqual((fast[0].double() - released).abs().max().item(), 1e-6)
        self.assertLessEqual((js_divergence(probs, chunk_elements=1) - fast).abs().max().item(), 1e-6)


    def test_full_scale_normalisation(self):
        divergence = js_divergence(class_distributions(random_logits(1, 21, 49, seed=2), 0.1))[0]
        similarity = 1 - divergence
        rescaled = (similarity - similarity.min(1, keepdim=True)[0]) / (
            similarity.max(1, keepdim=True)[0] - similarity.min(1, keepdim=True)[0] + 1e-8)
        self.assertLessEqual(rescaled.min(1)[0].abs().max().item(), 1e-6)
        self.assertLessEqual((rescaled.max(1)[0] - 1).abs().max().item(), 1e-5)
        self.assertTrue(torch.equal(rescaled.argmax(1), torch.arange(49)))
        closed = normalized_affinity(divergence[None].double(), 0.1)[0]
        self.assertLessEqual((closed - released_normalize(divergence.double())).abs().max().item(), 1e-5)

    def test_scale_sizes(self):
        self.assertEqual([scaled_grid((28, 28), s)[0] for s in (0.25, 0.37, 0.5, 0.63, 0.75, 0.87)],
                         [7, 10, 14, 17, 21, 24])
        self.assertEqual([scaled_grid((37, 37), s)[0] for s in (0.25, 0.37, 0.5, 0.63, 0.75, 0.87)],
                         [9, 13, 18, 23, 27, 32])
        self.assertEqual(scaled_grid((2, 3), 0.25), (1, 1))

    def test_upsampled_divergence_is_u_j_ut(self):
        small, grid = (5, 7), (12, 9)
        divergence = js_divergence(class_distributions(random_logits(1, 11, 35, seed=3, dtype=torch.float64), 0.1))
        upsampled = upsample_divergence(divergence, small, grid)[0]
        matrix = torch.kron(bilinear_matrix(small[0], grid[0]), bilinear_matrix(small[1], grid[1]))
        self.assertLessEqual((upsampled - matrix @ divergence[0] @ matrix.t()).abs().max().item(), 1e-12)
        self.assertLessEqual((upsampled - upsampled.t()).abs().max().item(), 1e-12)
        rows_first = upsample_divergence(divergence.transpose(1, 2), small, grid)[0].t()
        self.assertLessEqual((upsampled - rows_first).abs().max().item(), 1e-12)
        affinity = normalized_affinity(upsampled[None], 0.1)[0]
        self.assertEqual(affinity.shape, (108, 108))
        self.assertGreaterEqual(affinity.min().item(), 0)
        self.assertLessEqual(affinity.max().item(), 1)
        self.assertLessEqual(affinity.min(1)[0].abs().max().item(), 1e-9)
        self.assertLessEqual((affinity.max(1)[0] - 1).abs().max().item(), 1e-6)

    def test_aggregated_map(self):
        weights = cdam_attention(random_logits(2, 30, 14, 11, seed=4))
        self.assertEqual(weights.shape, (2, 154, 154))
        self.assertGreaterEqual(weights.min().item(), 0)
        self.assertLessEqual(weights.max().item(), 1 + 1e-6)
        self.assertGreaterEqual(weights.diagonal(dim1=1, dim2=2).min().item(), 1 / 7 - 1e-6)
        self.assertGreaterEqual(weights.sum(-1).min().item(), 1 - 1e-3)
        self.assertGreater(weights.sum(-1).max().item(), 1.5)  # not row-normalized

    def test_degenerate_input_gives_zero_map(self):
        constant = torch.ones(1, 5, 6, 6)
        self.assertTrue(torch.equal(cdam_attention(constant), torch.zeros(1, 36, 36)))
        single_query = cdam_attention(random_logits(1, 1, 6, 6, seed=5))
        self.assertTrue(torch.equal(single_query, torch.zeros(1, 36, 36)))

    def test_batched_equals_sequential(self):
        logits = random_logits(3, 25, 10, 12, seed=6)
        batched = cdam_attention(logits, chunk_elements=5000)
        sequential = torch.cat([cdam_attention(logits[i:i + 1]) for i in range(3)])
        self.assertLessEqual((batched - sequential).abs().max().item(), 1e-5)

    def test_cdam_map_denoises_patch_scores(self):
        grid, num_classes = 20, 4
        layout = torch.zeros(grid, grid, dtype=torch.long)
        layout[:, 8:] = 1
        layout[12:, 4:15] = 2
        layout[2:7, 2:7] = 3
        clean = F.one_hot(layout, num_classes).permute(2, 0, 1).float()
        for seed in range(3):
            noisy = 0.2 * clean + 0.2 * torch.randn(num_classes, grid, grid, generator=torch.Generator().manual_seed(seed))
            weights = cdam_attention(noisy[None])[0]
            refined = (weights @ noisy.flatten(1).t()).t()
            accuracy_before = (noisy.flatten(1).argmax(0) == layout.flatten()).float().mean()
            accuracy_after = (refined.argmax(0) == layout.flatten()).float().mean()
            self.assertGreater(accuracy_after, accuracy_before + 0.15)


class TestPostprocess(unittest.TestCase):
    def test_threshold_formula_and_sources(self):
        entropy = torch.tensor([[0.5, 3.0, 1.0], [1.0, 2.0, 1.5]])
        self.assertAlmostEqual(background_threshold(entropy, 2.5, 0.5), 1.25 / 1.5)
        self.assertAlmostEqual(background_threshold(entropy, 2.5, 0.5, "image"), 1.25 / 1.75)
        self.assertEqual(background_threshold(torch.zeros(1, 4), 2.5, 0.5), math.inf)
        self.assertEqual(background_threshold(entropy, 0.0, 0.5), 0.0)
        with self.assertRaises(ValueError):
            background_threshold(entropy, 2.5, 0.5, "mean")

    def test_background_assignment_and_synonyms(self):
        logits = random_logits(5, 8, 9, seed=7, scale=0.05)
        probs = class_probabilities(logits, (0, 1, 1, 2, 2), 3, 50.0)
        query_probs = torch.softmax(50 * logits, 0)
        self.assertTrue(torch.equal(probs[1], torch.maximum(query_probs[1], query_probs[2])))
        threshold = probs.max(0)[0].median().item()
        labels = encode_background(probs, threshold).argmax(0)
        expected = probs.argmax(0)
        expected[probs.max(0)[0] < threshold] = 0
        self.assertTrue(torch.equal(labels, expected))
        self.assertTrue(0 < (labels == 0).sum() < labels.numel())


class TestDenseCLIP(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = build_clip("tiny:ViT-B-16", "random", seed=1)[0]
        cls.images = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))

    def test_positional_embedding(self):
        visual = build_clip("ViT-B-16", "random")[0].visual
        encoder = DenseCLIPEncoder(visual)
        table = encoder.positional_embedding((28, 28))
        self.assertEqual(table.shape, (785, 768))
        self.assertTrue(torch.equal(table[0], visual.positional_embedding[0]))
        self.assertIs(encoder.positional_embedding((14, 14)), visual.positional_embedding)

    def test_positional_embedding_cache_follows_the_weights(self):
        encoder = DenseCLIPEncoder(self.model.visual)
        first = encoder.positional_embedding((5, 7))
        self.assertIs(encoder.positional_embedding((5, 7)), first)  # cached per grid
        self.assertEqual(encoder.positional_embedding((3, 4)).shape[0], 13)
        table = self.model.visual.positional_embedding
        original = table.detach().clone()
        try:
            with torch.no_grad():
                table.add_(1.0)  # what a weight load does in place
            self.assertTrue(torch.allclose(encoder.positional_embedding((5, 7)), first + 1.0, atol=1e-5))
        finally:
            with torch.no_grad():
                table.copy_(original)

    def test_maskclip_first_pass_is_block_with_identity_attention(self):
        encoder = DenseCLIPEncoder(self.model.visual, "maskclip")
        with torch.no_grad():
            state = encoder.forward_to_last_block(self.images)
            num_tokens = state.tokens.shape[1]
            identity_mask = torch.full((num_tokens, num_tokens), float("-inf")).fill_diagonal_(0)
            official = encoder.project(encoder.blocks[-1](state.tokens, attn_mask=identity_mask))
            self.assertLessEqual((encoder.first_pass(state) - official).abs().max().item(), 1e-5)
            # W = identity in the second pass reproduces the first pass (CLS row/column zero)
            identity = torch.eye(num_tokens - 1).expand(2, -1, -1)
            self.assertLessEqual((encoder.second_pass(state, identity) - encoder.first_pass(state)).abs().max(), 1e-5)

    def test_second_pass_is_per_head_buffer(self):
        encoder = DenseCLIPEncoder(self.model.visual)
        with torch.no_grad():
            state = encoder.forward_to_last_block(self.images[:1])
            weights = cdam_attention(random_logits(1, 9, *state.grid, seed=8))
            buffer = torch.zeros(encoder.num_heads, weights.shape[1] + 1, weights.shape[1] + 1)
            buffer[:, 1:, 1:] = weights[0]
            expected = reference_last_block(self.model.visual, state.tokens, buffer)
            self.assertLessEqual((encoder.second_pass(state, weights)[0] - expected).abs().max().item(), 1e-5)
            # W = 0: the attention output is just out_proj's bias, no NaN
            zero = encoder.second_pass(state, torch.zeros_like(weights))
            self.assertTrue(torch.isfinite(zero).all())

    def test_every_base_and_second_pass_mode(self):
        with torch.no_grad():
            for base in BASE_VARIANTS:
                encoder = DenseCLIPEncoder(self.model.visual, base)
                state = encoder.forward_to_last_block(self.images)
                first = encoder.first_pass(state)
                self.assertEqual(first.shape, (2, 20, 32))
                self.assertTrue(torch.allclose(first.norm(dim=-1), torch.ones(2, 20), atol=1e-5))
                weights = cdam_attention(random_logits(2, 7, *state.grid, seed=9))
                for mode in ("released", "base"):
                    self.assertTrue(torch.isfinite(encoder.second_pass(state, weights, mode)).all())
        with self.assertRaises(ValueError):
            DenseCLIPEncoder(self.model.visual, "segclip")

    def test_model_derived_constants(self):
        config = open_clip.get_model_config("ViT-L-14")
        config["vision_cfg"].update(layers=2, width=64, head_width=4)
        config["text_cfg"].update(layers=1, width=32, heads=2)
        config["embed_dim"] = 24
        model = open_clip.CLIP(**config)
        encoder = DenseCLIPEncoder(model.visual)
        self.assertEqual((encoder.num_heads, encoder.patch_size), (16, (14, 14)))
        self.assertEqual(encoder.grid_for(448, 448), (32, 32))
        segmentor = CDAMSegmentor(encoder, crop=56, stride=28)
        text = TextQueries(unit_rows(3, 24, 0), unit_rows(4, 24, 1), (0, 1, 2), 3)
        with torch.no_grad():
            result = segmentor(torch.randn(3, 56, 70), (30, 40), text)
        self.assertEqual(result.scores.shape, (3, 30, 40))
        tiny_large = DenseCLIPEncoder(build_clip("tiny:ViT-L-14", "random")[0].visual)
        self.assertEqual(tiny_large.patch_size, (14, 14))

    def test_quick_gelu_forced(self):
        model = build_clip("tiny:ViT-B-16", "random", force_quick_gelu=True)[0]
        self.assertIsInstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


class TestSegmentor(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.visual = build_clip("tiny:ViT-B-16", "random", seed=2)[0].visual
        cls.text = TextQueries(unit_rows(4, 32, 3), unit_rows(6, 32, 4), (0, 1, 2, 3), 4)

    def segment(self, image, text=None, **options):
        segmentor = CDAMSegmentor(DenseCLIPEncoder(self.visual), crop=64, stride=32, **options)
        with torch.no_grad():
            return segmentor(image, (45, 70), text or self.text)

    def test_batching_and_determinism(self):
        image = torch.randn(3, 64, 100, generator=torch.Generator().manual_seed(5))
        together = self.segment(image)
        one_by_one = self.segment(image, window_batch=1)
        self.assertLessEqual((together.logits - one_by_one.logits).abs().max().item(), 1e-5)
        self.segment(torch.randn(3, 64, 64))
        again = self.segment(image)
        self.assertTrue(torch.equal(again.scores, together.scores))

    def test_atp_only_changes_the_map(self):
        image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(6))
        without_atp = TextQueries(self.text.dataset, self.text.dataset.new_zeros(0, 32), (0, 1, 2, 3), 4)
        with_atp, no_atp = self.segment(image), self.segment(image, without_atp)
        self.assertEqual(with_atp.scores.shape, no_atp.scores.shape)
        self.assertFalse(torch.equal(with_atp.logits, no_atp.logits))
        baseline = self.segment(image, use_cdam=False)
        baseline_no_atp = self.segment(image, without_atp, use_cdam=False)
        self.assertTrue(torch.equal(baseline.scores, baseline_no_atp.scores))

    def test_single_class_is_all_background(self):
        text = TextQueries(self.text.dataset[:1], self.text.extra, (0,), 1)
        result = self.segment(torch.randn(3, 64, 80), text)
        self.assertEqual(result.threshold, math.inf)
        self.assertTrue(torch.isfinite(result.scores).all())
        self.assertTrue(torch.equal(result.scores.argmax(0), torch.zeros(45, 70, dtype=torch.long)))


if __name__ == "__main__":
    unittest.main()
