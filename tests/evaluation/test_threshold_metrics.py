"""The release convention of ``segmentation_metrics``, row C ("no class") of the confusion matrix, and the
one-pass threshold histogram against one confusion matrix per threshold."""
import math
import unittest

import numpy as np

from cdam_d2.evaluation.metrics import (
    confusion_matrix,
    segmentation_metrics,
    threshold_confusion_matrices,
    threshold_histogram,
)

NAMES = ["background", "a", "b", "c"]


class ReleaseConventionTest(unittest.TestCase):
    def test_by_hand(self):
        # 2x4 image; class "c" is neither labelled nor predicted; one pixel predicted as no class (4).
        gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
        pred = np.array([[0, 1, 1, 4], [2, 0, 0, 0]], np.uint8)
        conf, _ = confusion_matrix(pred, gt, 4, 255)
        self.assertEqual(int(conf[4, 1]), 1)  # row C: the no-class pixel, a miss of its label
        res = segmentation_metrics(conf, NAMES, "release")
        # T = (2, 3, 2, 0), P = (3, 2, 1, 0) over labelled pixels, TP = (1, 1, 1, 0)
        iou = [1 / 4, 1 / 4, 1 / 2, 0.0]
        fp = [2 / 4, 1 / 4, 0.0, 0.0]
        fn = [1 / 4, 2 / 4, 1 / 2, 0.0]
        for name, value in zip(NAMES, iou):
            self.assertAlmostEqual(res[f"IoU-{name}"], 100 * value)
        self.assertAlmostEqual(res["mIoU"], 100 * sum(iou) / 4)
        self.assertAlmostEqual(res["FP"], 100 * sum(fp) / 4)
        self.assertAlmostEqual(res["FN"], 100 * sum(fn) / 4)
        d2 = segmentation_metrics(conf, NAMES, "detectron2")
        self.assertTrue(math.isnan(d2["IoU-c"]))
        self.assertAlmostEqual(d2["mIoU"], 100 * sum(iou[:3]) / 3)
        self.assertAlmostEqual(d2["FN"], 100 * sum(fn[:3]) / 3)
        # The no-class pixel counts in the ground truth of "a" in every convention.
        self.assertAlmostEqual(d2["ACC-a"], 100 / 3)

    def test_no_class_row_in_the_generic_path(self):
        gt = np.array([[0, 1], [1, 255]], np.int64)
        pred = np.array([[3, 1], [3, 0]], np.int64)
        conf, _ = confusion_matrix(pred, gt, 3, 255)
        self.assertEqual(conf[3].tolist(), [1, 1, 0, 0])
        self.assertTrue(np.array_equal(conf, confusion_matrix(pred.astype(np.uint8), gt.astype(np.uint8), 3, 255)[0]))


class ThresholdHistogramTest(unittest.TestCase):
    def check(self, num_classes, thresholds, seed):
        rng = np.random.default_rng(seed)
        shape = (23, 31)
        # values on the thresholds (ties: background) and anywhere
        peak = rng.choice(np.asarray(list(thresholds) + [0.05, 0.5, 0.95], np.float32), size=shape)
        anywhere = rng.random(shape) < 0.5
        peak[anywhere] = rng.random(int(anywhere.sum()))
        peak_class = rng.integers(1, num_classes, size=shape).astype(np.uint8)
        gt = rng.integers(0, num_classes, size=shape).astype(np.uint8)
        gt[rng.random(shape) < 0.1] = 255
        gt[0, 0] = num_classes + 1  # invalid: reported, kept with the ignored
        hist, invalid = threshold_histogram(peak, peak_class, gt, thresholds, num_classes, 255)
        self.assertEqual(invalid, {num_classes + 1: 1})
        confusions = threshold_confusion_matrices(hist)
        self.assertEqual(confusions.shape, (len(thresholds), num_classes + 1, num_classes + 1))
        for index, threshold in enumerate(thresholds):
            pred = np.where(peak > np.float32(threshold), peak_class, 0).astype(np.uint8)
            expected, _ = confusion_matrix(pred, gt, num_classes, 255)
            self.assertTrue(np.array_equal(confusions[index], expected), (num_classes, threshold))

    def test_equals_one_confusion_matrix_per_threshold(self):
        self.check(6, [i / 100 for i in range(0, 60)], seed=0)  # byte histogram path

    def test_many_classes(self):
        self.check(81, [i / 100 for i in range(20, 60, 5)], seed=1)  # generic path: too many bins for 16 bits

    def test_more_than_255_classes_against_a_pixel_by_pixel_count(self):
        # Labels and classes past 255 (and the last class 300 for ignored labels) must not wrap around in bytes.
        num_classes, ignore_label = 300, 1000
        rng = np.random.default_rng(2)
        shape = (19, 23)
        peak = rng.random(shape).astype(np.float32)
        peak_class = rng.integers(1, num_classes, size=shape)
        gt = rng.integers(0, num_classes, size=shape).astype(np.int32)
        gt[rng.random(shape) < 0.1] = ignore_label
        gt[0, 0], gt[0, 1] = num_classes + 7, -3  # invalid: reported, kept with the ignored
        self.assertGreater(int((gt[gt < num_classes] >= 256).sum()), 0)
        thresholds = [0.2, 0.5, 0.7]
        hist, invalid = threshold_histogram(peak, peak_class, gt, thresholds, num_classes, ignore_label)
        self.assertEqual(invalid, {num_classes + 7: 1, -3: 1})
        confusions = threshold_confusion_matrices(hist)
        for index, threshold in enumerate(thresholds):
            expected = np.zeros((num_classes + 1, num_classes + 1), np.int64)
            for score, best, label in zip(peak.ravel().tolist(), peak_class.ravel().tolist(), gt.ravel().tolist()):
                row = best if score > threshold else 0
                expected[row, label if 0 <= label < num_classes else num_classes] += 1
            self.assertTrue(np.array_equal(confusions[index], expected), threshold)

    def test_thresholds_must_ascend(self):
        with self.assertRaisesRegex(ValueError, "ascending"):
            threshold_histogram(np.zeros((2, 2), np.float32), np.ones((2, 2), np.uint8), np.zeros((2, 2), np.uint8),
                                [0.3, 0.2], 3, 255)


if __name__ == "__main__":
    unittest.main()
