"""Background rules (entropy / fixed / none) and SCLIP's area rule in every output path (segmentor, PAMR,
banded full size, Detectron2 model and predictor), against the rules written out here as the peers write them."""
import unittest

import numpy as np
import torch
import torch.nn.functional as F

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip
from cdam_d2.cdam.modeling.full_size import full_size_predictions
from cdam_d2.cdam.modeling.pamr import refine_masks
from cdam_d2.cdam.modeling.postprocess import background_threshold, patch_entropy_bits
from tests.helpers import CDAM_TOY_CONFIG, requires_detectron2, toy_cfg

QUERY_TO_CLASS = (0, 1, 1, 2, 3)  # class 1 has two names


def peer_labels(logits, logit_scale, query_to_class, prob_threshold, area_threshold=None):
    """The peers' post-processing of (Q, H, W) logits: softmax, best synonym per class, SCLIP's area rule
    (one-hot areas of the classes >= 1), then class 0 where the best probability is below the threshold."""
    probs = torch.softmax(logit_scale * logits, dim=0)
    num_classes = max(query_to_class) + 1
    probs = torch.stack([probs[[q for q, c in enumerate(query_to_class) if c == k]].amax(0)
                         for k in range(num_classes)])
    if area_threshold is not None:
        areas = F.one_hot(probs.argmax(0), num_classes).to(probs.dtype)[:, :, 1:].sum((0, 1))
        probs[1:] *= (areas > area_threshold * areas.sum()).to(probs.dtype)[:, None, None]
    labels = probs.argmax(0)
    labels[probs.amax(0) < prob_threshold] = 0
    return labels


def region_logits(height=40, width=60, seed=0):
    """(5, H, W) logits: class 1 (its second name) on the left half, class 3 top right, background bottom right,
    a small class 2 (72 pixels) top left, plus noise so that probabilities vary."""
    generator = torch.Generator().manual_seed(seed)
    logits = 0.01 * torch.randn(5, height, width, generator=generator)
    logits[2, :, : width // 2] += 0.06
    logits[4, : height // 2, width // 2:] += 0.06
    logits[0, height // 2:, width // 2:] += 0.06
    logits[3, :6, :12] += 0.12
    return logits


class TestRulesOnKnownLogits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        visual = build_clip("tiny:ViT-B-16", "random", seed=0)[0].visual
        cls.encoder = DenseCLIPEncoder(visual)
        cls.text = TextQueries(torch.zeros(5, 32), torch.zeros(0, 32), QUERY_TO_CLASS, 4)

    def postprocess(self, logits, threshold, **options):
        segmentor = CDAMSegmentor(self.encoder, logit_scale=40.0, **options)
        image = torch.randn(3, *logits.shape[-2:], generator=torch.Generator().manual_seed(1))
        return segmentor.postprocess(logits, threshold, image, tuple(logits.shape[-2:]), self.text)

    def test_fixed_threshold_and_area_rule(self):
        logits = region_logits()
        plain = peer_labels(logits, 40.0, QUERY_TO_CLASS, 0.0)
        self.assertGreater(int((plain == 2).sum()), 0)
        best = torch.softmax(40.0 * logits, 0).amax(0)
        for threshold in (0.0, float(best.quantile(0.25))):
            for area in (None, 0.1):
                with self.subTest(threshold=threshold, area=area):
                    expected = peer_labels(logits, 40.0, QUERY_TO_CLASS, threshold, area)
                    result = self.postprocess(logits, threshold, area_threshold=area or 0.0)
                    self.assertTrue(torch.equal(result.scores.argmax(0), expected))
                    if area:  # the small class is gone, its probabilities are 0
                        self.assertEqual(int((expected == 2).sum()), 0)
                        self.assertEqual(result.probabilities[2].abs().max().item(), 0.0)
                    if threshold:
                        self.assertGreater(int((expected == 0).sum()), int((plain == 0).sum()))

    def test_rule_gives_the_threshold(self):
        window_logits = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(2))
        entropy = patch_entropy_bits(window_logits.flatten(2), 50.0)
        for rule, options, expected in (
                ("entropy", {}, background_threshold(entropy, 2.5, 0.5)),
                ("entropy", {"alpha": 0.0}, 0.0),  # the old way to disable it
                ("fixed", {"fixed_threshold": 0.42}, 0.42),
                ("none", {"fixed_threshold": 0.42}, 0.0)):
            segmentor = CDAMSegmentor(self.encoder, background_rule=rule, **options)
            self.assertEqual(segmentor.image_threshold(window_logits), expected)
        with self.assertRaises(ValueError):
            CDAMSegmentor(self.encoder, background_rule="otsu")

    def test_pamr_path_applies_the_rules_after_refinement(self):
        logits = region_logits(seed=3)
        result = self.postprocess(logits, 0.35, area_threshold=0.1, pamr_steps=2)
        image = torch.randn(3, *logits.shape[-2:], generator=torch.Generator().manual_seed(1))
        refined = refine_masks(image[None], logits[None], 2, (8, 16))[0]
        self.assertTrue(torch.equal(result.scores.argmax(0), peer_labels(refined, 40.0, QUERY_TO_CLASS, 0.35, 0.1)))

    def test_full_size_bands_count_areas_over_the_whole_map(self):
        small = region_logits(seed=4)
        output = (97, 131)
        upsampled = F.interpolate(small[None], size=output, mode="bilinear", align_corners=False)[0]
        expected = peer_labels(upsampled, 40.0, QUERY_TO_CLASS, 0.35, 0.1)
        self.assertNotEqual(int((peer_labels(upsampled, 40.0, QUERY_TO_CLASS, 0.35) != expected).sum()), 0)
        probs = torch.softmax(40.0 * upsampled, 0).topk(2, dim=0).values
        decided = probs[0] - probs[1] > 1e-5  # the banded resize may round differently
        for band_elements in (5 * 131 * 4, 2 ** 23):  # 4 rows a band, and one band
            labels, probabilities = full_size_predictions(small, output, QUERY_TO_CLASS, 4, 40.0, 0.35,
                                                          band_elements=band_elements, area_threshold=0.1)
            self.assertTrue(torch.equal(labels.long()[decided], expected[decided]))
            self.assertEqual(probabilities[2].abs().max().item(), 0.0)


@requires_detectron2
class TestModelPaths(unittest.TestCase):
    def test_forward_and_full_size_apply_the_configured_rules(self):
        from detectron2.modeling import build_model

        from cdam_d2.cdam.predictor import CDAMPredictor
        from cdam_d2.cdam.resize import resize_image

        image = np.random.default_rng(0).integers(0, 256, (75, 101, 3), dtype=np.uint8)
        cfg = toy_cfg(CDAM_TOY_CONFIG)
        cfg.MODEL.CDAM.USE_CDAM = False
        model = build_model(cfg).eval()
        predictor = CDAMPredictor(cfg, "background; cat; dog, puppy; bird", input_format="RGB", model=model)
        resized = resize_image(image, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        with torch.no_grad():
            merged, _ = model.segmentor.merged_logits(model.normalize(tensor), predictor._queries)
        logits = F.interpolate(merged[None], size=(75, 101), mode="bilinear", align_corners=False)[0]
        query_to_class = predictor._queries.query_to_class
        scale = model.segmentor.logit_scale
        # thresholds from these logits: about a third of the pixels below, and the rarest class removed
        probs = torch.softmax(scale * logits, 0)
        threshold = float(probs.amax(0).quantile(0.3))
        areas = torch.bincount(peer_labels(logits, scale, query_to_class, 0.0).flatten(), minlength=4)[1:].float()
        present = areas[areas > 0].sort().values
        self.assertGreater(len(present), 1)
        area = float((present[0] + present[1]) / 2 / areas.sum())
        rarest = int(torch.where(areas > 0, areas, areas.max() + 1).argmin()) + 1
        model.segmentor.background_rule, model.segmentor.fixed_threshold = "fixed", threshold
        model.segmentor.area_threshold = area
        expected = peer_labels(logits, scale, query_to_class, threshold, area)
        self.assertEqual(int((expected == rarest).sum()), 0)
        self.assertGreater(int((expected == 0).sum()), 0)
        with torch.no_grad():
            scores = model.segment(tensor, 75, 101, predictor._queries)
        self.assertTrue(torch.equal(scores.argmax(0), expected))
        full = predictor(image)
        top2 = torch.softmax(scale * logits, 0).topk(2, dim=0).values  # the banded resize rounds differently
        decided = ((top2[0] - top2[1] > 1e-5) & ((probs.amax(0) - threshold).abs() > 1e-5)).numpy()
        np.testing.assert_array_equal(full.labels[decided], expected.numpy()[decided])


if __name__ == "__main__":
    unittest.main()
