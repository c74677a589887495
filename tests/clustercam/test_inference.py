"""Multi-scale decoder inference: the fused map is the pixel-wise maximum over the scales of the softmax of
the decoder's output upsampled to the image size (values in [0, 1], per-pixel sum between 1 and the number
of scales), and scales too small for the network are left out with a warning."""
import unittest

import torch
from torch.nn import functional as F

from cdam_d2.clustercam.modeling import ClusterCAMNet, multiscale_segmentation_probs


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


if __name__ == "__main__":
    unittest.main()
