"""What one patch attends to, on the CDAM side: each base's last-block attention against its formula written
out here, the window and patch under a point (padded windows included), the CDAM map's row, the base's
attention under the backbone's autocast, SC-CLIP's and ResCLIP's attention through the same path, and the
CDAM panel's tiles by content."""
import unittest

import numpy as np
import torch
import torch.nn.functional as F

from tests.helpers import CDAM_TOY_CONFIG, requires_detectron2, toy_cfg

BASES = ("clip", "maskclip", "sclip", "clearclip", "gem", "naclip")


def tiny_visual():
    from cdam_d2.cdam.modeling.clip_loader import build_clip

    return build_clip("tiny:ViT-B-16", "random", False, 0)[0].visual.eval()


class BaseAttentionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(0)
        cls.visual = tiny_visual()
        cls.images = torch.randn(2, 3, 48, 64)

    def qkv(self, encoder, state):
        """q, k of the last block (B, H, T, d), from its packed in_proj, written out here."""
        block = encoder.blocks[-1]
        normed = block.ln_1(state.tokens)
        width = normed.shape[-1]
        heads = block.attn.num_heads
        weight, bias = block.attn.in_proj_weight, block.attn.in_proj_bias

        def split(part):
            return F.linear(normed, weight[part * width:(part + 1) * width], bias[part * width:(part + 1) * width]) \
                .unflatten(-1, (heads, -1)).transpose(1, 2)

        return split(0), split(1)

    def test_each_base_against_its_formula(self):
        from cdam_d2.cdam.modeling import DenseCLIPEncoder

        for base in BASES:
            with self.subTest(base=base), torch.no_grad():
                encoder = DenseCLIPEncoder(self.visual, base)
                state = encoder.forward_to_last_block(self.images)
                got = encoder.base_attention(state)
                tokens = state.tokens.shape[1]
                self.assertEqual(tuple(got.shape), (2, tokens - 1, tokens - 1))
                q, k = self.qkv(encoder, state)
                scale = q.shape[-1] ** -0.5
                if base == "clip":  # the block's own attention, through nn.MultiheadAttention
                    normed = encoder.blocks[-1].ln_1(state.tokens)
                    if not getattr(encoder.visual.transformer, "batch_first", False):
                        normed = normed.transpose(0, 1)
                    _, weights = encoder.blocks[-1].attn(normed, normed, normed, need_weights=True,
                                                         average_attn_weights=True)
                    expected = weights[:, 1:, 1:]
                elif base == "maskclip":
                    expected = torch.eye(tokens - 1).expand(2, -1, -1)
                elif base == "sclip":
                    expected = ((scale * q @ q.transpose(-2, -1)).softmax(-1)
                                + (scale * k @ k.transpose(-2, -1)).softmax(-1)).mean(1)[:, 1:, 1:]
                elif base == "clearclip":
                    expected = (scale * q @ q.transpose(-2, -1)).softmax(-1).mean(1)[:, 1:, 1:]
                elif base == "naclip":
                    rows, cols = np.divmod(np.arange(tokens - 1), state.grid[1])
                    distance2 = (rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2
                    bias = torch.zeros(tokens, tokens)
                    bias[1:, 1:] = torch.from_numpy(np.exp(-distance2 / (2 * 5.0 ** 2))).float()
                    expected = (scale * k @ k.transpose(-2, -1) + bias).softmax(-1).mean(1)[:, 1:, 1:]
                else:  # gem: rows of three averaged softmaxes over all tokens
                    sums = got.sum(-1)
                    self.assertTrue(((sums > 0.5) & (sums <= 1 + 1e-5)).all())
                    continue
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


class LocatePatchTest(unittest.TestCase):
    def test_nearest_window_and_clamped_patch(self):
        from cdam_d2.cdam.modeling.patch_attention import locate_patch
        from cdam_d2.cdam.modeling.sliding_window import window_boxes

        boxes = window_boxes(100, 150, 64, 32)  # windows start at x = 0, 32, 64, 86 and y = 0, 32, 36
        self.assertEqual(locate_patch(boxes, (4, 4), (16, 16), (5, 5)), (0, (0, 0)))
        index, patch = locate_patch(boxes, (4, 4), (16, 16), (50, 70))
        y1, y2, x1, x2 = boxes[index]
        self.assertTrue(y1 <= 50 < y2 and x1 <= 70 < x2)
        centres = [((a + b) / 2 - 50) ** 2 + ((c + d) / 2 - 70) ** 2 for a, b, c, d in boxes if a <= 50 < b and c <= 70 < d]
        self.assertEqual(((y1 + y2) / 2 - 50) ** 2 + ((x1 + x2) / 2 - 70) ** 2, min(centres))
        self.assertEqual(patch, ((50 - y1) // 16, (70 - x1) // 16))
        self.assertEqual(locate_patch(boxes, (3, 3), (16, 16), (99, 149))[1], (2, 2))  # past the last full patch
        with self.assertRaisesRegex(ValueError, "outside"):
            locate_patch(boxes, (4, 4), (16, 16), (100, 5))


def nearest_window(boxes, point):
    """The box holding ``point`` = (y, x) whose centre is nearest, written out here."""
    y, x = point
    holding = [box for box in boxes if box[0] <= y < box[1] and box[2] <= x < box[3]]
    return min(holding, key=lambda b: (y - (b[0] + b[1]) / 2) ** 2 + (x - (b[2] + b[3]) / 2) ** 2)


def text_queries(visual, count=5, extra=3, seed=2):
    from cdam_d2.cdam.modeling import TextQueries

    generator = torch.Generator().manual_seed(seed)
    dataset = F.normalize(torch.randn(count, visual.output_dim, generator=generator), dim=-1)
    atp = F.normalize(torch.randn(extra, visual.output_dim, generator=generator), dim=-1)
    return TextQueries(dataset, atp, tuple(range(count)), count)


class SegmentorPatchAttentionTest(unittest.TestCase):
    """``patch_attention`` cuts the window as the segmentor's merged logits do and runs the base's attention
    as its forward does."""

    @classmethod
    def setUpClass(cls):
        cls.visual = tiny_visual()
        cls.text = text_queries(cls.visual)
        cls.image = torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(3))

    def by_hand(self, encoder, window, autocast=None):
        """(3, h, w) window -> its (N, N) CDAM map and base attention, and its grid, from the encoder directly."""
        from cdam_d2.cdam.modeling import CDAMSegmentor

        context = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
        with torch.no_grad():
            with context:
                state = encoder.forward_to_last_block(window[None])
                features = encoder.first_pass(state, self.text.dataset)
                base = encoder.base_attention(state, self.text.dataset)
            queries = torch.cat([self.text.dataset, self.text.extra])
            logits = (features.float() @ queries.t()).transpose(1, 2).reshape(1, -1, *state.grid)
            weights = CDAMSegmentor(encoder).attention_map(logits)
        return weights[0], base[0].float(), state.grid

    def test_padded_windows_follow_the_merged_logits(self):
        from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder
        from cdam_d2.cdam.modeling.patch_attention import patch_attention
        from cdam_d2.cdam.modeling.sliding_window import window_boxes

        encoder = DenseCLIPEncoder(self.visual, "sclip")
        segmentor = CDAMSegmentor(encoder, crop=56, stride=28, pad_windows=True)
        point = (30.0, 75.0)
        found = patch_attention(segmentor, self.image, self.text, point)
        y1, y2, x1, x2 = nearest_window(window_boxes(70, 100, 56, 28), point)
        self.assertEqual(found.box, (y1, y2, x1, x2))
        # 56 pixels -> 64 = 4 patches of 16: 4 pixels of zeros on each side, as ClearCLIP pads
        self.assertEqual(found.padding, (4, 4, 4, 4))
        weights, base, grid = self.by_hand(encoder, F.pad(self.image[:, y1:y2, x1:x2], (4, 4, 4, 4)))
        self.assertEqual(grid, (4, 4))
        row, column = (int(point[0]) - y1 + 4) // 16, (int(point[1]) - x1 + 4) // 16
        self.assertEqual(found.patch, (row, column))
        torch.testing.assert_close(found.cdam, weights[row * 4 + column].view(grid))
        torch.testing.assert_close(found.base, base[row * 4 + column].view(grid))

    def test_base_attention_runs_under_the_backbone_autocast(self):
        from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder
        from cdam_d2.cdam.modeling.patch_attention import patch_attention
        from cdam_d2.cdam.modeling.sliding_window import window_boxes

        encoder = DenseCLIPEncoder(self.visual, "clearclip")
        segmentor = CDAMSegmentor(encoder, crop=64, stride=32, autocast_dtypes={"cpu": torch.bfloat16})
        point = (20.0, 40.0)
        found = patch_attention(segmentor, self.image, self.text, point)
        y1, y2, x1, x2 = nearest_window(window_boxes(70, 100, 64, 32), point)
        patch = (20 - y1) // 16 * 4 + (40 - x1) // 16
        _, bf16, grid = self.by_hand(encoder, self.image[:, y1:y2, x1:x2], torch.bfloat16)
        _, fp32, _ = self.by_hand(encoder, self.image[:, y1:y2, x1:x2])
        torch.testing.assert_close(found.base, bf16[patch].view(grid), rtol=0, atol=0)
        self.assertGreater((found.base - fp32[patch].view(grid)).abs().max().item(), 1e-4)

    def test_multi_layer_bases_show_the_attention_they_apply(self):
        from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder
        from cdam_d2.cdam.modeling.patch_attention import patch_attention

        options = {"sc_clip": {"pre_adjust_layer": 1, "post_adjust_layer": 0, "multi_level_layers": (0, 2)},
                   "resclip": {"rcs_layers": (0, 2), "sfr_threshold": 0.0}}
        for base, row_sum in (("sc_clip", 1.0), ("resclip", 2.0)):
            with self.subTest(base=base):
                encoder = DenseCLIPEncoder(self.visual, base, base_options=options[base])
                segmentor = CDAMSegmentor(encoder, crop=64, stride=32)
                found = patch_attention(segmentor, self.image, self.text, (50.0, 10.0))
                y1, y2, x1, x2 = found.box
                weights, attention, grid = self.by_hand(encoder, self.image[:, y1:y2, x1:x2])
                patch = found.patch[0] * grid[1] + found.patch[1]
                torch.testing.assert_close(found.base, attention[patch].view(grid))
                torch.testing.assert_close(found.cdam, weights[patch].view(grid))
                total = found.base.sum().item()  # SC-CLIP: a mean of two softmaxes; ResCLIP: tau_r minus the CLS
                self.assertLessEqual(total, row_sum + 1e-5)
                self.assertGreater(total, 0.5 * row_sum)


@requires_detectron2
class CDAMPanelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from detectron2.modeling import build_model

        from cdam_d2.cdam.modeling.vocabulary import parse_vocabulary_string

        cls.cfg = toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.TEMPLATES", "openai_imagenet")
        cls.model = build_model(cls.cfg).eval()
        cls.queries = cls.model.text_queries(parse_vocabulary_string("background; red square; sky, blue sky; grass"))
        cls.image = np.random.default_rng(0).integers(0, 256, size=(90, 120, 3), dtype=np.uint8)

    def test_cdam_row_is_the_windows_map(self):
        from cdam_d2.cdam.modeling.patch_attention import patch_attention
        from cdam_d2.cdam.resize import resize_image
        from cdam_d2.cdam.modeling.sliding_window import crop_windows

        segmentor = self.model.segmentor
        resized = resize_image(self.image, self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
        normalized = self.model.normalize(torch.as_tensor(resized.transpose(2, 0, 1).copy()))
        found = patch_attention(segmentor, normalized, self.queries, (70.0, 100.0))
        window = crop_windows(normalized, [found.box])
        with torch.no_grad():
            state = segmentor.encoder.forward_to_last_block(window)
            features = segmentor.encoder.first_pass(state)
            queries = torch.cat([self.queries.dataset, self.queries.extra])
            logits = (features @ queries.t()).transpose(1, 2).reshape(1, -1, *state.grid)
            weights = segmentor.attention_map(logits)
            base = segmentor.encoder.base_attention(state)
        row, column = found.patch
        patch = row * state.grid[1] + column
        torch.testing.assert_close(found.cdam, weights[0, patch].view(state.grid))
        torch.testing.assert_close(found.base, base[0, patch].view(state.grid))
        y1, _, x1, _ = found.box
        self.assertEqual((row, column), ((70 - y1) // 16, (100 - x1) // 16))

    def test_tiles_hold_the_model_tensors(self):
        from detectron2.modeling import build_model

        from cdam_d2.cdam.modeling.postprocess import class_probabilities
        from cdam_d2.cdam.resize import resize_image
        from cdam_d2.cdam.visualize import image_patch_attention, panel_tiles

        gt = np.zeros((90, 120), np.uint8)
        args = (self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MAX_SIZE_TEST)
        tiles = panel_tiles(self.model, self.image, self.queries, (100, 30), *args, ground_truth=gt)
        self.assertEqual([t.title for t in tiles], [
            "input", "ground truth", "base patch logits (argmax)", "prediction", "CDAM attention of patch (100, 30)",
            f"{self.cfg.MODEL.CDAM.BASE} attention of patch (100, 30)"])
        self.assertEqual(len(panel_tiles(self.model, self.image, self.queries, (1, 1), *args)), 5)
        self.assertTrue(self.model.segmentor.use_cdam)  # the base-only pass leaves CDAM on
        resized = resize_image(self.image, *args)
        tensor = torch.as_tensor(resized.transpose(2, 0, 1).copy())
        # the base alone: a model built with CDAM off
        base_model = build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.USE_CDAM", "False")).eval()
        base_model.load_state_dict(self.model.state_dict())
        merged, _ = base_model.segmentor.merged_logits(base_model.normalize(tensor), self.queries)
        logits = F.interpolate(merged[None], size=(90, 120), mode="bilinear", align_corners=False)[0]
        base_labels = class_probabilities(logits, self.queries.query_to_class, self.queries.num_classes, 50.0).argmax(0)
        np.testing.assert_array_equal(tiles[2].array, base_labels.numpy())
        np.testing.assert_array_equal(tiles[3].array, self.model.segment(tensor, 90, 120, self.queries).argmax(0).numpy())
        found = image_patch_attention(self.model, self.image, self.queries, (100, 30), *args)
        np.testing.assert_array_equal(tiles[4].array, found.attention.cdam.numpy())
        np.testing.assert_array_equal(tiles[5].array, found.attention.base.numpy())
        self.assertEqual(tiles[4].marker, found.attention.patch)
        y1, y2, x1, x2 = found.attention.box
        np.testing.assert_array_equal(tiles[4].background, resized[y1:y2, x1:x2])
        with self.assertRaisesRegex(ValueError, "outside the 120x90 image"):
            image_patch_attention(self.model, self.image, self.queries, (120, 3), *args)

    def test_padded_window_picture_lies_under_the_maps(self):
        from detectron2.modeling import build_model

        from cdam_d2.cdam.resize import resize_image
        from cdam_d2.cdam.visualize import image_patch_attention

        cfg = toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.PAD_WINDOWS", "True", "MODEL.CDAM.SLIDE_CROP", "56",
                      "MODEL.CDAM.SLIDE_STRIDE", "28")
        model = build_model(cfg).eval()
        model.load_state_dict(self.model.state_dict())
        args = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        found = image_patch_attention(model, self.image, self.queries, (60, 40), *args)
        left, right, top, bottom = found.attention.padding
        self.assertEqual((left + right, top + bottom), (8, 8))  # 56-pixel windows padded to 64 = 4 patches
        self.assertEqual(found.window.shape, (64, 64, 3))
        self.assertEqual(tuple(found.attention.cdam.shape), (4, 4))
        y1, y2, x1, x2 = found.attention.box
        resized = resize_image(self.image, *args)
        np.testing.assert_array_equal(found.window[top:top + 56, left:left + 56], resized[y1:y2, x1:x2])
        padding = np.ones((64, 64), dtype=bool)
        padding[top:top + 56, left:left + 56] = False
        self.assertFalse(found.window[padding].any())  # the padding is black


if __name__ == "__main__":
    unittest.main()
