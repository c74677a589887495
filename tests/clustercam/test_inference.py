"""Multi-scale decoder inference (spec §3, §6.19), dense CRF and the training augmentation (§2.1)."""
import unittest

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from cdam_d2.clustercam.modeling import ClusterCAMNet, dense_crf
from cdam_d2.clustercam.modeling import multiscale_segmentation_probs
from cdam_d2.clustercam.augmentation import build_train_transform, random_erasing


def tiny_net():
    torch.manual_seed(0)
    return ClusterCAMNet(3, embed_dim=24, depth=2, num_heads=2, cluster_depth=2, cam_last_layers=2,
                         drop_path=0.0, decoder_dim=8).eval()


class TestMultiScaleInference(unittest.TestCase):
    def test_matches_protocol(self):
        net = tiny_net()
        image = torch.randn(1, 3, 75, 100)
        scales = (0.5, 0.75, 1.0, 1.25, 1.5)
        with torch.no_grad():
            probs = multiscale_segmentation_probs(net, image, scales)
            want = torch.zeros(4, 75, 100)
            for s in scales:
                x = F.interpolate(image, size=(int(75 * s), int(100 * s)), mode="bilinear", align_corners=True)
                segs = net(x)[2]
                up = F.interpolate(segs, size=(75, 100), mode="bilinear", align_corners=False)
                want = torch.maximum(want, up.softmax(1)[0])
        torch.testing.assert_close(probs, want)
        self.assertTrue(bool((probs >= 0).all() and (probs <= 1).all()))
        total = probs.sum(0)
        self.assertTrue(bool((total >= 1 - 1e-5).all() and (total <= 5 + 1e-5).all()))

    def test_small_images_skip_scales(self):
        net = tiny_net()
        with torch.no_grad():
            with self.assertWarnsRegex(UserWarning, "scale 0.5 .* left out of the fused prediction"):
                probs = multiscale_segmentation_probs(net, torch.randn(1, 3, 24, 40), (0.5, 1.0))
            self.assertEqual(tuple(probs.shape), (4, 24, 40))
            with self.assertRaisesRegex(ValueError, "smaller than one"), self.assertWarns(UserWarning):
                multiscale_segmentation_probs(net, torch.randn(1, 3, 10, 40), (0.5, 1.0))


def noisy_two_region_case(seed, height=40, width=60):
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, width // 2:] = 1
    image = np.where(truth[..., None] == 1, [200, 40, 40], [40, 40, 200]).astype(np.uint8)
    probs = np.stack([1.0 - truth, truth]).astype(np.float32) * 0.6 + 0.2
    probs += rng.normal(0, 0.25, probs.shape).astype(np.float32)
    return image, np.clip(probs, 0, 1).astype(np.float32), truth


class TestDenseCRF(unittest.TestCase):
    def test_marginals_and_denoising(self):
        image, probs, truth = noisy_two_region_case(0)
        q = dense_crf(image, probs)
        self.assertEqual(q.shape, probs.shape)
        np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
        raw_errors = (probs.argmax(0) != truth).sum()
        crf_errors = (q.argmax(0) != truth).sum()
        self.assertGreater(raw_errors, 20)
        self.assertLess(crf_errors, raw_errors // 4)

    def test_bad_image(self):
        _, probs, _ = noisy_two_region_case(0)
        with self.assertRaisesRegex(ValueError, "uint8"):
            dense_crf(np.zeros((40, 60, 3), dtype=np.float32), probs)


class TestAugmentation(unittest.TestCase):
    def test_train_transform(self):
        transform = build_train_transform(size=64)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8))
        for _ in range(5):
            out = transform(image)
            self.assertEqual(out.shape, (64, 64, 3))
            self.assertEqual(out.dtype, np.uint8)

    def test_crop_flip_only_keeps_content(self):
        # Without RandAugment and with the full-area crop of a square image, only a flip can happen.
        transform = build_train_transform(size=32, crop_scale=(1.0, 1.0), auto_augment="")
        array = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        outs = [transform(Image.fromarray(array)) for _ in range(20)]
        for out in outs:
            self.assertTrue(np.array_equal(out, array) or np.array_equal(out, array[:, ::-1]))
        self.assertTrue(any(np.array_equal(o, array[:, ::-1]) for o in outs))

    def test_random_erasing(self):
        images = torch.zeros(8, 3, 32, 32)
        self.assertTrue(torch.equal(random_erasing(images, 0.0), images))
        erased = random_erasing(images, 1.0)
        self.assertTrue(torch.equal(images, torch.zeros_like(images)))  # input untouched
        for image in erased:
            changed = (image != 0).any(0)
            rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            self.assertEqual(int(changed.sum()), int(box))  # one rectangle
            self.assertTrue(0.02 * 1024 * 0.5 <= int(box) <= 1024 / 3 + 32)


if __name__ == "__main__":
    unittest.main()
