"""Learnability: a tiny ClusterCAM trained with image-level labels only localises synthetic shapes.

The training loop is the method's (§2.2): MLSM on class tokens and CAM head, then the segmentation
phase on PAR-refined pseudo-labels from multi-scale CAMs. Ground-truth masks are used only to score.
"""
import unittest

import numpy as np
import torch
from torch.nn import functional as F

from cdam_d2.modeling.clustercam import (
    PAR,
    ClusterCAMNet,
    balanced_segmentation_loss,
    cams_to_labels,
    classification_loss,
    multiscale_cams,
    normalize_cams,
    refine_with_background_band,
)

NUM_CLASSES, SIZE = 3, 64
COLOURS = torch.tensor([[1.0, -0.8, -0.8], [-0.8, 1.0, -0.8], [-0.8, -0.8, 1.0]])


def make_batch(count, rng):
    """Noisy backgrounds with 1-2 coloured rectangles/ellipses. Returns images (already 'normalised',
    zero-mean unit-ish scale), masks (B, H, W) in 0..K and multi-hot labels (B, K)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = torch.randn(count, 3, SIZE, SIZE) * 0.3 + torch.randn(count, 3, 1, 1) * 0.3
    masks = torch.zeros(count, SIZE, SIZE, dtype=torch.long)
    for i in range(count):
        for c in rng.choice(NUM_CLASSES, int(rng.integers(1, 3)), replace=False):
            w, h = rng.integers(16, 32, 2)
            x0, y0 = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            if rng.random() < 0.5:
                shape = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            else:
                shape = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
            shape = torch.from_numpy(shape)
            images[i][:, shape] = COLOURS[c][:, None] + 0.3 * torch.randn(3, int(shape.sum()))
            masks[i][shape] = int(c) + 1
    labels = torch.stack([(masks == c + 1).flatten(1).sum(1) > 20 for c in range(NUM_CLASSES)], dim=1).float()
    return images, masks, labels


def mean_iou(pred, truth, num_labels):
    ious = []
    for c in range(num_labels):
        union = ((pred == c) | (truth == c)).sum().item()
        if union:
            ious.append(((pred == c) & (truth == c)).sum().item() / union)
    return sum(ious) / len(ious)


class TestLearnability(unittest.TestCase):
    def test_weak_labels_localise_shapes(self):
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        net = ClusterCAMNet(NUM_CLASSES, embed_dim=32, depth=2, num_heads=2, patch_size=8, pos_embed_grid=8,
                            cluster_depth=2, cam_last_layers=2, drop_path=0.0, decoder_dim=32,
                            decoder_dilation=2)
        par = PAR(dilations=(1, 2, 4, 8))
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
        iterations, seg_start = 300, 150
        net.train()
        for iteration in range(iterations):
            images, _, labels = make_batch(8, rng)
            pseudo = None
            if iteration >= seg_start:
                with torch.no_grad():
                    cams = normalize_cams(multiscale_cams(net, images), labels)
                    pseudo = refine_with_background_band(cams, labels, (images * 0.25 + 0.5).clamp(0, 1), par)
            cls_logits, pat_logits, segs = net(images, with_segmentation=pseudo is not None)
            loss = classification_loss(cls_logits, labels) + classification_loss(pat_logits, labels)
            if pseudo is not None:
                loss = loss + 0.1 * balanced_segmentation_loss(segs, pseudo)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        net.eval()
        images, masks, labels = make_batch(32, np.random.default_rng(1))
        with torch.no_grad():
            cams = normalize_cams(multiscale_cams(net, images, (1.0,)), labels)
            cam_miou = mean_iou(cams_to_labels(cams, 0.4), masks, NUM_CLASSES + 1)
            segs = net(images)[2]
            decoder_pred = F.interpolate(segs, size=(SIZE, SIZE), mode="bilinear").argmax(1)
            decoder_miou = mean_iou(decoder_pred, masks, NUM_CLASSES + 1)
        # Baselines a broken CAM would produce: all background, or every present class everywhere.
        all_background = mean_iou(torch.zeros_like(masks), masks, NUM_CLASSES + 1)
        uniform = cams_to_labels(labels[:, :, None, None].expand(-1, -1, SIZE, SIZE), 0.4)
        uniform_miou = mean_iou(uniform, masks, NUM_CLASSES + 1)
        chance = max(all_background, uniform_miou)
        self.assertLess(chance, 0.3)
        self.assertGreater(cam_miou, 0.42, f"CAM mIoU {cam_miou:.3f} (chance {chance:.3f})")
        self.assertGreater(decoder_miou, 0.5, f"decoder mIoU {decoder_miou:.3f} (chance {chance:.3f})")


if __name__ == "__main__":
    unittest.main()
