"""PAMR (pixel-adaptive mask refinement) on synthetic inputs: an independent unfold-based evaluation of the
algorithm, refinement that follows image edges, identity when off, and the segmentor / config wiring."""
import unittest

import torch
import torch.nn.functional as F

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip
from cdam_d2.cdam.modeling.pamr import neighbour_affinities, refine_masks
from tests.helpers import requires_detectron2


def unfold_neighbourhoods(maps: torch.Tensor, dilation: int) -> torch.Tensor:
    """(B, K, H, W) -> (B, K, 9, H, W): the dilated 3 x 3 neighbourhood of every pixel (replicated borders)."""
    batch, channels, height, width = maps.shape
    padded = F.pad(maps, [dilation] * 4, mode="replicate")
    return F.unfold(padded, 3, dilation=dilation).reshape(batch, channels, 9, height, width)


def reference_pamr(image, masks, steps, dilations):
    """PAMR written from the algorithm's description with F.unfold (centre = tap 4 of each 3 x 3 window)."""
    windows = torch.cat([unfold_neighbourhoods(image, d) for d in dilations], dim=2)  # (B, C, 9 n, H, W)
    sigma = windows.std(dim=2, keepdim=True)
    outer = [tap for d in range(len(dilations)) for tap in range(9 * d, 9 * d + 9) if tap % 9 != 4]
    distance = (windows[:, :, outer] - image[:, :, None]).abs()
    weights = torch.softmax((-distance / (1e-8 + 0.1 * sigma)).mean(dim=1, keepdim=True), dim=2)
    for _ in range(steps):
        neighbours = torch.cat([unfold_neighbourhoods(masks, d) for d in dilations], dim=2)[:, :, outer]
        masks = (neighbours * weights).sum(dim=2)
    return masks


def edge_scene(height=48, width=64, image_edge=29, mask_edge=37, seed=0):
    """Image dark left of ``image_edge`` and bright right of it (slight noise); 2-class scores whose boundary
    sits at ``mask_edge`` instead."""
    generator = torch.Generator().manual_seed(seed)
    columns = torch.arange(width, dtype=torch.float32).expand(height, width)
    image = torch.where(columns < image_edge, -1.0, 1.0).expand(1, 3, height, width).clone()
    image += 0.05 * torch.randn(image.shape, generator=generator)
    foreground = torch.sigmoid((columns - mask_edge) / 3.0)
    masks = torch.stack([1 - foreground, foreground])[None] + 0.05 * torch.randn(1, 2, height, width,
                                                                                generator=generator)
    return image, masks, (columns >= image_edge).long()


class TestPAMR(unittest.TestCase):
    def test_equals_unfold_reference(self):
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(2, 3, 37, 50, generator=generator)
        masks = torch.randn(2, 5, 37, 50, generator=generator)
        for dilations in [(1,), (1, 2), (8, 16)]:
            expected = reference_pamr(image, masks, 3, dilations)
            self.assertLessEqual((refine_masks(image, masks, 3, dilations) - expected).abs().max().item(), 1e-5)

    def test_refinement_follows_image_edges(self):
        image, masks, truth = edge_scene()
        errors_before = (masks.argmax(1)[0] != truth).sum().item()
        refined = refine_masks(image, masks, steps=10, dilations=(8, 16))
        errors_after = (refined.argmax(1)[0] != truth).sum().item()
        self.assertGreater(errors_before, 48 * 6)  # the boundary is 8 columns off
        self.assertLess(errors_after, errors_before / 10)
        # a pixel next to the edge draws (almost) nothing from across it
        weights = neighbour_affinities(image, (8, 16))[0, :, 20, 25]  # x = 25: its +8 / +16 neighbours are bright
        across = [2, 4, 7, 10, 12, 15]  # offsets with dx > 0 (row-major 3 x 3 without the centre, per dilation)
        self.assertLess(weights[across].sum().item(), 1e-3)
        self.assertAlmostEqual(weights.sum().item(), 1.0, places=5)
        # a convex combination: values stay within the input range
        self.assertLessEqual(refined.max().item(), masks.max().item() + 1e-6)
        self.assertGreaterEqual(refined.min().item(), masks.min().item() - 1e-6)

    def test_off_is_identity_and_sizes_must_match(self):
        image, masks, _ = edge_scene()
        self.assertIs(refine_masks(image, masks, 0), masks)
        with self.assertRaisesRegex(ValueError, "differ in size"):
            refine_masks(image[..., :-1], masks, 1)

    def test_segmentor_applies_pamr_at_the_output_size(self):
        visual = build_clip("tiny:ViT-B-16", "random", seed=2)[0].visual
        generator = torch.Generator().manual_seed(3)
        text = TextQueries(F.normalize(torch.randn(4, 32, generator=generator), dim=-1),
                           F.normalize(torch.randn(6, 32, generator=generator), dim=-1), (0, 1, 2, 3), 4)
        image = torch.randn(3, 64, 100, generator=generator)
        with torch.no_grad():
            plain = CDAMSegmentor(DenseCLIPEncoder(visual), crop=64, stride=32)(image, (45, 70), text)
            off = CDAMSegmentor(DenseCLIPEncoder(visual), crop=64, stride=32, pamr_steps=0)(image, (45, 70), text)
            on = CDAMSegmentor(DenseCLIPEncoder(visual), crop=64, stride=32, pamr_steps=2,
                               pamr_dilations=(1, 2))(image, (45, 70), text)
        self.assertTrue(torch.equal(off.scores, plain.scores))
        guide = F.interpolate(image[None], size=(45, 70), mode="bilinear", align_corners=False)
        expected = reference_pamr(guide, plain.logits[None], 2, (1, 2))[0]
        self.assertLessEqual((on.logits - expected).abs().max().item(), 1e-5)
        self.assertEqual(on.threshold, plain.threshold)  # the threshold comes from the windows, before PAMR

    @requires_detectron2
    def test_config_keys(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        cfg = get_cfg()
        add_cdam_config(cfg)
        self.assertEqual((cfg.MODEL.CDAM.PAMR_STEPS, tuple(cfg.MODEL.CDAM.PAMR_DILATIONS)), (0, (8, 16)))
        cfg.merge_from_list(["MODEL.CDAM.PAMR_STEPS", "10", "MODEL.CDAM.PAMR_DILATIONS", "(4, 8)"])
        self.assertEqual((cfg.MODEL.CDAM.PAMR_STEPS, tuple(cfg.MODEL.CDAM.PAMR_DILATIONS)), (10, (4, 8)))


if __name__ == "__main__":
    unittest.main()
