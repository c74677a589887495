"""Segmentation metrics (cdam_d2.evaluation.metrics and rle): the confusion matrix and its layout, IoU and
accuracies in Detectron2's and MMSegmentation's conventions, argmax labels as torch's, boundary maps as
Detectron2's, and per-label RLE as pycocotools'."""
import math
import unittest
from unittest import mock

import numpy as np
import torch

from cdam_d2.evaluation import metrics
from cdam_d2.evaluation.metrics import (
    argmax_labels,
    boundary_confusion_matrix,
    confusion_matrix,
    ignored_as_last_class,
    mask_boundary,
    segmentation_metrics,
)
from cdam_d2.evaluation.rle import encode_label_masks

NAMES = ["background", "a", "b", "c"]


class MetricsTest(unittest.TestCase):
    def setUp(self):
        # 2x4 image; class 3 ("c") never appears in the labels but is predicted once.
        self.gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
        self.pred = np.array([[0, 1, 1, 1], [2, 3, 0, 0]])

    def test_confusion_matrix_layout(self):
        conf, invalid = confusion_matrix(self.pred, self.gt, 4, 255)
        self.assertEqual(invalid, {})
        byte_conf, _ = confusion_matrix(self.pred.astype(np.uint8), self.gt.astype(np.uint8), 4, 255)
        self.assertTrue(np.array_equal(byte_conf, conf))
        self.assertEqual(conf.shape, (5, 5))
        self.assertEqual(int(conf.sum()), 8)
        # rows = prediction, columns = label, last column = ignored labels
        self.assertEqual(int(conf[0, 0]), 1)
        self.assertEqual(int(conf[1, 0]), 1)
        self.assertEqual(int(conf[1, 1]), 2)
        self.assertEqual(int(conf[0, 1]), 1)
        self.assertEqual(int(conf[2, 2]), 1)
        self.assertEqual(int(conf[3, 2]), 1)
        self.assertEqual(int(conf[0, 4]), 1)

    def test_metrics_by_hand_both_conventions(self):
        conf, _ = confusion_matrix(self.pred, self.gt, 4, 255)
        res = segmentation_metrics(conf, NAMES, "detectron2")
        iou_bg, iou_a, iou_b = 1 / 3, 2 / 4, 1 / 2  # tp / (gt + pred - tp), ignored pixel excluded
        self.assertAlmostEqual(res["IoU-background"], 100 * iou_bg)
        self.assertAlmostEqual(res["IoU-a"], 100 * iou_a)
        self.assertAlmostEqual(res["IoU-b"], 100 * iou_b)
        self.assertTrue(math.isnan(res["IoU-c"]))
        self.assertAlmostEqual(res["mIoU"], 100 * (iou_bg + iou_a + iou_b) / 3)
        self.assertAlmostEqual(res["fwIoU"], 100 * (2 * iou_bg + 3 * iou_a + 2 * iou_b) / 7)
        self.assertAlmostEqual(res["mACC"], 100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
        self.assertAlmostEqual(res["pACC"], 100 * 4 / 7)
        self.assertTrue(math.isnan(res["ACC-c"]))
        mmseg = segmentation_metrics(conf, NAMES, "mmseg")
        self.assertEqual(mmseg["IoU-c"], 0.0)
        self.assertAlmostEqual(mmseg["mIoU"], 100 * (iou_bg + iou_a + iou_b) / 4)
        self.assertEqual(mmseg["mACC"], res["mACC"])
        with self.assertRaisesRegex(ValueError, "Unknown metric convention 'voc'"):
            segmentation_metrics(conf, NAMES, "voc")

    def test_argmax_labels_matches_torch_including_ties_nan_and_inf(self):
        generator = torch.Generator().manual_seed(0)
        shapes = [(5, 7, 9), (21, 37, 50), (3, 1, 1), (1, 4, 5), (2, 13, 1), (7, 1, 13), (4, 8, 8)]
        threads = torch.get_num_threads()
        try:
            for num_threads in (1, 3, 4):  # the CPU path splits pixels by thread count
                torch.set_num_threads(num_threads)
                for shape in shapes:
                    ties = torch.randint(0, 3, shape, generator=generator).float()
                    special = torch.randn(shape, generator=generator)
                    flat = special.view(-1)
                    flat[::7], flat[1::11], flat[2::5] = math.nan, math.inf, -math.inf
                    for scores in (ties, special):
                        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                            expected = scores.to(dtype).argmax(0)
                            got = argmax_labels(scores.to(dtype))
                            self.assertEqual(got.dtype, torch.int64)
                            self.assertTrue(torch.equal(got, expected), (num_threads, shape, dtype))
        finally:
            torch.set_num_threads(threads)
        several_nans = torch.zeros(4, 2, 3)
        several_nans[1, 0, 0] = several_nans[3, 0, 0] = math.nan  # the first NaN wins, as in torch
        self.assertEqual(int(argmax_labels(several_nans)[0, 0]), 1)
        batch = torch.randn(3, 21, 30, 40, generator=generator, requires_grad=True)
        for scores in (batch[2], batch[1].transpose(1, 2), batch[0, :, ::2]):  # offset, strides
            self.assertTrue(torch.equal(argmax_labels(scores), scores.argmax(0)))
            as_bytes = argmax_labels(scores, torch.uint8)
            self.assertEqual(as_bytes.dtype, torch.uint8)
            self.assertTrue(torch.equal(as_bytes.long(), scores.argmax(0)))

    def test_confusion_matrix_equals_independent_count_and_reports_invalid_values(self):
        rng = np.random.default_rng(1)
        num_classes, ignore = 6, 255
        pred = rng.integers(0, num_classes, size=(37, 41))
        gt = rng.integers(0, num_classes, size=(37, 41)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = ignore
        gt[0, :3], gt[5, 7] = 30, 254  # out of range: counted by value, kept with the ignored
        expected = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
        for p, g in zip(pred.ravel(), gt.ravel()):
            expected[p, g if g < num_classes else num_classes] += 1
        # byte histogram (also summed over chunks, as for images of more than 2**24 pixels),
        # and the generic count for other types
        for chunk in (2**24, 100):
            with mock.patch.object(metrics, "_HISTOGRAM_CHUNK", chunk):
                for dtypes in ((np.uint8, np.uint8), (np.int64, np.uint8), (np.int32, np.int64)):
                    conf, invalid = confusion_matrix(
                        pred.astype(dtypes[0]), gt.astype(dtypes[1]), num_classes, ignore
                    )
                    self.assertEqual(conf.dtype, np.int64)
                    self.assertTrue(np.array_equal(conf, expected), (chunk, dtypes))
                    self.assertEqual(invalid, {30: 3, 254: 1})
        negative = gt.astype(np.int64)
        negative[1, 1] = -2
        self.assertEqual(confusion_matrix(pred, negative, 6, 255)[1][-2], 1)
        # An ignore label inside [0, C) still wins over the class of the same value.
        conf, invalid = confusion_matrix(self.pred.astype(np.uint8), self.gt.astype(np.uint8), 4, 0)
        self.assertEqual(int(conf[:, 0].sum()), 0)
        self.assertEqual(int(conf[:, 4].sum()), 3)  # two 0s and the now invalid 255
        self.assertEqual(invalid, {255: 1})

    def test_boundary_is_map_minus_zero_padded_erosion(self):
        label = np.zeros((20, 20), dtype=np.uint8)
        label[5:15, 5:15] = 2
        boundary = mask_boundary(label, dilation_ratio=0.02)  # radius round(0.02*28.3)=1
        expected = label.copy()
        expected[6:14, 6:14] = 0
        self.assertTrue(np.array_equal(boundary, expected))
        self.assertEqual(boundary.dtype, np.uint8)
        full = np.ones((6, 6), dtype=np.uint8)
        ring = mask_boundary(full)
        self.assertEqual(int(ring[1:-1, 1:-1].sum()), 0)
        self.assertEqual(int(ring.sum()), 20)  # the image border erodes against zeros
        with self.assertRaisesRegex(ValueError, "uint8 label map, got int64"):
            mask_boundary(label.astype(np.int64))


    def test_boundary_equals_iterated_3x3_erosion_of_map_padded_by_one_zero_ring(self):
        """Detectron2's definition, written out in numpy: pad one ring of zeros, take r times the
        minimum over each pixel's 3x3 neighbours inside the padded map, crop, subtract."""

        def reference(label_map, ratio):
            height, width = label_map.shape
            radius = max(1, int(round(ratio * np.sqrt(height**2 + width**2))))
            eroded = np.pad(label_map, 1)
            for _ in range(radius):
                beyond = np.pad(eroded, 1, constant_values=255)  # never the minimum
                shifted = [beyond[1 + dy:beyond.shape[0] - 1 + dy, 1 + dx:beyond.shape[1] - 1 + dx]
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
                eroded = np.minimum.reduce(shifted)
            return label_map - eroded[1:-1, 1:-1]

        rng = np.random.default_rng(4)
        shapes = [(1, 1), (2, 3), (7, 9), (40, 3), (1, 30), (64, 64), (101, 37)]
        for shape in shapes:
            blocky = rng.integers(0, 7, size=(shape[0] // 5 + 1, shape[1] // 5 + 1))
            blocky = blocky.repeat(5, axis=0).repeat(5, axis=1)[: shape[0], : shape[1]]
            for label_map in (rng.integers(0, 30, size=shape), blocky):
                label_map = label_map.astype(np.uint8)
                for ratio in (0.02, 0.05, 0.2):
                    self.assertTrue(
                        np.array_equal(mask_boundary(label_map, ratio), reference(label_map, ratio)),
                        (shape, ratio),
                    )

    def test_boundary_confusion_is_detectron2_formula_computed_in_int64(self):
        rng = np.random.default_rng(5)
        for num_classes in (6, 21, 40):
            pred = rng.integers(0, num_classes, size=(12, 16)).repeat(4, 0).repeat(4, 1)
            gt = rng.integers(0, num_classes + 1, size=(24, 32)).repeat(2, 0).repeat(2, 1)
            pred, gt = pred.astype(np.uint8), gt.astype(np.uint8)
            b_pred, b_gt = mask_boundary(pred), mask_boundary(gt)
            size = num_classes + 1
            expected = np.bincount(size * b_pred.astype(np.int64).ravel() + b_gt.ravel(),
                                   minlength=size**2).reshape(size, size)
            got = boundary_confusion_matrix(pred, gt, num_classes)
            self.assertTrue(np.array_equal(got, expected), num_classes)
            wrapped = np.bincount((size * b_pred + b_gt).ravel(),  # Detectron2's uint8 arithmetic
                                  minlength=size**2).reshape(size, size)
            self.assertEqual(np.array_equal(wrapped, expected), num_classes < 16, num_classes)

    def test_ignored_as_last_class(self):
        gt = np.array([[0, 3, 4, 255], [7, 200, 2, 0]], dtype=np.uint8)
        expected = np.array([[0, 3, 4, 4], [4, 4, 2, 0]], dtype=np.uint8)
        for labels in (gt, gt.astype(np.int64)):
            self.assertTrue(np.array_equal(ignored_as_last_class(labels, 4, 255), expected))
        expected[expected == 0] = 4
        expected[0, 3] = 4  # 255 is out of range when the ignore label is 0
        self.assertTrue(np.array_equal(ignored_as_last_class(gt, 4, 0), expected))

    def test_ignored_as_last_class_beyond_255_classes_keeps_every_value(self):
        # With 300 classes the last class (the ignored column / no-class row) is 300: bytes would wrap it to 44.
        gt = np.array([[0, 254, 255, 17]], dtype=np.uint8)
        for labels, ignore_label in ((gt, 255), (gt.astype(np.int32), 255), (np.array([[299, 300, -1, 256]]), -1)):
            with self.subTest(dtype=labels.dtype, ignore_label=ignore_label):
                got = ignored_as_last_class(labels, 300, ignore_label)
                expected = [[300 if v == ignore_label or not 0 <= v < 300 else v for v in row] for row in labels.tolist()]
                self.assertEqual(got.tolist(), expected)
                self.assertEqual(got.dtype, np.int64)

    def test_rle_of_each_label_equals_pycocotools(self):
        import pycocotools.mask as mask_util

        rng = np.random.default_rng(6)
        maps = [np.zeros((1, 1)), np.full((3, 5), 7), rng.integers(0, 2, size=(1, 9)),
                rng.integers(0, 3, size=(9, 1)), rng.integers(0, 21, size=(37, 41))]
        blocky = rng.integers(0, 5, size=(6, 8)).repeat(7, 0).repeat(9, 1)
        blocky[blocky == 3] = 200  # labels need not be contiguous
        maps += [blocky, blocky.T]
        for labels in maps:
            for dtype in (np.uint8, np.int32, np.int64):
                typed = labels.astype(dtype)
                expected = [(int(label), mask_util.encode(
                    np.asfortranarray((typed == label).astype(np.uint8)[:, :, None]))[0])
                    for label in np.unique(typed)]
                self.assertEqual(encode_label_masks(typed), expected, (labels.shape, dtype))


if __name__ == "__main__":
    unittest.main()
