"""PAR identities (48 neighbours, no self term, weights summing to 1.01 per pixel), multi-scale CAMs and
the background-band pseudo-labels (0, 255 or a present class), and the losses (multi-label soft margin; the
segmentation loss as the mean of the background and the foreground cross-entropies)."""
import math
import unittest

import torch
from torch.nn import functional as F

from cdam_d2.clustercam.modeling import (
    IGNORE_LABEL,
    PAR,
    ClusterCAMNet,
    balanced_segmentation_loss,
    classification_loss,
    denormalize_to_unit,
    multiscale_cams,
    normalize_cams,
    refine_with_background_band,
)


def reference_par_weights(image, dilations, w1=0.3, w2=0.01):
    """W(i, j) for every pixel from the formulas, with explicit index clamping (replicate padding)."""
    _, _, height, width = image.shape
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    neighbours, distances = [], []
    for d in dilations:
        for dy, dx in offsets:
            rows = (torch.arange(height) + dy * d).clamp(0, height - 1)
            cols = (torch.arange(width) + dx * d).clamp(0, width - 1)
            neighbours.append(image[0][:, rows][:, :, cols])
            distances.append(d * math.sqrt(dy * dy + dx * dx))
    neighbours = torch.stack(neighbours, dim=1)  # (3, 48, h, w)
    sigma = neighbours.std(dim=1, keepdim=True)
    colour = (-((neighbours - image[0][:, None]).abs() / (sigma + 1e-5) / w1) ** 2).mean(0)
    distances = torch.tensor(distances, dtype=image.dtype)
    position = -(distances / (distances.std() + 1e-5) / w1) ** 2
    return colour.softmax(0) + w2 * position.softmax(0)[:, None, None], neighbours


class TestPAR(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.par = PAR().double()
        self.image = torch.rand(1, 3, 30, 34, dtype=torch.float64)

    def test_weights_match_formulas(self):
        self.assertEqual(self.par.num_neighbours, 48)
        want, _ = reference_par_weights(self.image, self.par.dilations)
        got = self.par.affinity(self.image)[0]
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got.sum(0), torch.full((30, 34), 1.01, dtype=torch.float64))

    def test_positional_constants(self):
        distances = self.par.distances
        self.assertAlmostEqual(distances.std().item(), 9.9003, places=3)
        position = (-(distances / (distances.std() + 1e-5) / 0.3) ** 2).softmax(0)
        self.assertAlmostEqual(position[1].item(), 0.0765, places=3)  # axis neighbour, d = 1
        self.assertAlmostEqual(position[0].item(), 0.0683, places=3)  # diagonal, d = 1

    def test_no_self_term(self):
        # A one-pixel spike spreads to its neighbours and does not stay on itself.
        masks = torch.zeros(1, 1, 30, 34, dtype=torch.float64)
        masks[0, 0, 15, 17] = 1.0
        par = PAR(num_iters=1).double()
        out = par(self.image, masks)
        self.assertEqual(out[0, 0, 15, 17].item(), 0.0)
        self.assertGreater(out[0, 0, 14, 17].item(), 0.0)

    def test_propagation_identities(self):
        probs = torch.rand(1, 4, 30, 34, dtype=torch.float64).softmax(1)
        out = self.par(self.image, probs)
        torch.testing.assert_close(out.sum(1), torch.full((1, 30, 34), 1.01 ** 10, dtype=torch.float64))
        constant = torch.full((1, 2, 30, 34), 0.25, dtype=torch.float64)
        torch.testing.assert_close(self.par(self.image, constant), constant * 1.01 ** 10)


class TestCams(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.net = ClusterCAMNet(3, embed_dim=24, depth=2, num_heads=2, cluster_depth=2, cam_last_layers=2,
                                 drop_path=0.0, decoder_dim=8).eval()

    def test_multiscale_cam_is_flip_equivariant(self):
        images = torch.randn(2, 3, 64, 96)
        with torch.no_grad():
            cams = multiscale_cams(self.net, images)
            flipped = multiscale_cams(self.net, images.flip(-1))
        self.assertEqual(tuple(cams.shape), (2, 3, 64, 96))
        self.assertTrue(bool((cams >= 0).all()))
        torch.testing.assert_close(flipped, cams.flip(-1))

    def test_normalisation(self):
        images = torch.randn(2, 3, 64, 64)
        labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        with torch.no_grad():
            raw = multiscale_cams(self.net, images)
        cams = normalize_cams(raw, labels)
        self.assertTrue(bool((cams[0, 1] == 0).all() and (cams[1, 0] == 0).all() and (cams[1, 2] == 0).all()))
        for b, k in [(0, 0), (0, 2), (1, 1)]:
            spread = (raw[b, k].max() - raw[b, k].min()).item()
            self.assertEqual(cams[b, k].min().item(), 0.0)
            self.assertAlmostEqual(cams[b, k].max().item(), spread / (spread + 1e-5), places=5)
            self.assertLess(cams[b, k].max().item(), 1.0)

    def test_denormalize_clamps_and_floors(self):
        mean = torch.tensor([100.0, 100.0, 100.0]).view(3, 1, 1)
        std = torch.tensor([50.0, 50.0, 50.0]).view(3, 1, 1)
        images = torch.tensor([-5.0, 0.013, 5.0]).view(1, 3, 1, 1)
        unit = denormalize_to_unit(images, mean, std).flatten()
        torch.testing.assert_close(unit, torch.tensor([0.0, 100.0 / 255, 1.0]))


class TestBackgroundBand(unittest.TestCase):
    def test_semantics(self):
        height, width = 32, 96
        cams = torch.zeros(1, 3, height, width)
        cams[0, 0, :, :32] = 0.9  # present, confident
        cams[0, 0, :, 32:64] = 0.45  # present, uncertain
        cams[0, 0, :, 64:] = 0.2  # present, weak
        cams[0, 2] = 0.9  # absent class: must never be chosen
        labels = torch.tensor([[1.0, 1.0, 0.0]])
        # Image edges follow the CAM regions (PAR propagates along colour similarity).
        torch.manual_seed(0)
        image = 0.02 * torch.rand(1, 3, height, width)
        for channel in range(3):
            image[0, channel, :, 32 * channel:32 * (channel + 1)] += 0.9
        out = refine_with_background_band(cams, labels, image, PAR(), bg_thr=0.4, delta=0.1)
        self.assertEqual(tuple(out.shape), (1, height, width))
        self.assertTrue(set(out.unique().tolist()) <= {0, 1, 2, IGNORE_LABEL})
        self.assertEqual(out[0, 8:24, 4:28].unique().tolist(), [1])
        self.assertEqual(out[0, 8:24, 40:56].unique().tolist(), [IGNORE_LABEL])
        self.assertEqual(out[0, 8:24, 72:92].unique().tolist(), [0])
        self.assertFalse(bool((out == 3).any()))

    def test_no_classes_gives_background(self):
        out = refine_with_background_band(torch.rand(2, 3, 16, 16), torch.zeros(2, 3), torch.rand(2, 3, 16, 16),
                                          PAR(dilations=(1, 2)))
        self.assertTrue(bool((out == 0).all()))


class TestLosses(unittest.TestCase):
    def test_classification_loss_formula(self):
        logits = torch.randn(4, 5)
        labels = (torch.rand(4, 5) > 0.5).float()
        want = -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean()
        torch.testing.assert_close(classification_loss(logits, labels), want)

    def test_balanced_segmentation_loss(self):
        torch.manual_seed(0)
        seg_logits = torch.randn(2, 4, 4, 4, requires_grad=True)
        target = torch.randint(0, 4, (2, 8, 8))
        target[0, :2] = IGNORE_LABEL
        upsampled = F.interpolate(seg_logits, size=(8, 8), mode="bilinear", align_corners=False)
        ce = -upsampled.log_softmax(1)
        picked = ce.gather(1, target.clamp(max=3).unsqueeze(1))[:, 0]
        want = 0.5 * (picked[target == 0].mean() + picked[(target > 0) & (target < 4)].mean())
        torch.testing.assert_close(balanced_segmentation_loss(seg_logits, target), want)
        background_only = torch.where(target == IGNORE_LABEL, target, torch.zeros_like(target))
        half_bg = 0.5 * picked.new_tensor(0).add(ce[:, 0][background_only == 0].mean())
        torch.testing.assert_close(balanced_segmentation_loss(seg_logits, background_only), half_bg)
        all_ignored = torch.full_like(target, IGNORE_LABEL)
        loss = balanced_segmentation_loss(seg_logits, all_ignored)
        loss.backward()
        self.assertEqual(loss.item(), 0.0)
        self.assertTrue(bool(torch.isfinite(seg_logits.grad).all()))


if __name__ == "__main__":
    unittest.main()
