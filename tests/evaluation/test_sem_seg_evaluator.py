import math
import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch
from PIL import Image

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
from tests.d2_guard import requires_detectron2

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

def _write_random_dataset(root, num_images, num_classes, seed, write=True):
    """Random label PNGs (10% ignore) and random score maps; ``write=False`` only rebuilds them."""
    rng = np.random.default_rng(seed)
    records, predictions = [], []
    for index in range(num_images):
        height, width = rng.integers(40, 90, size=2)
        gt = rng.integers(0, num_classes, size=(height, width)).astype(np.uint8)
        gt[rng.random((height, width)) < 0.1] = 255
        if index % 5 == 0:
            gt[gt == 2] = 0  # make some classes rare so per-class means differ from pixel means
        image_path = os.path.join(root, f"{index}.jpg")
        label_path = os.path.join(root, f"{index}.png")
        if write:
            Image.fromarray(gt).save(label_path)
        records.append({"file_name": image_path, "sem_seg_file_name": label_path})
        scores = torch.from_numpy(rng.random((num_classes, height, width)).astype(np.float32))
        predictions.append(scores)
    return records, predictions


def _register(name, records, num_classes):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=[f"class{i}" for i in range(num_classes)], ignore_label=255,
        evaluator_type="sem_seg",
    )


def _unregister(name):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _run(evaluator, records, predictions, indices):
    evaluator.reset()
    for i in indices:
        evaluator.process([{"file_name": records[i]["file_name"]}], [{"sem_seg": predictions[i]}])
    return evaluator.evaluate()


def _assert_same_results(test, ours, theirs):
    """The same keys in the same order, and equal values (NaN equal to NaN)."""
    test.assertEqual(list(ours), list(theirs))
    for key, value in theirs.items():
        test.assertTrue(ours[key] == value or math.isnan(ours[key]) and math.isnan(value), key)


def _distributed_worker(root, num_images, num_classes):
    """Rank r evaluates images r, r+W, ... with cdam_d2's and Detectron2's evaluators (defaults,
    both writing into ``root``); saves the merged result (rank 0) and what each returned there."""
    from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator
    from detectron2.utils import comm

    from cdam_d2.evaluation import SemSegEvaluator

    records, predictions = _write_random_dataset(root, num_images, num_classes, 3, write=False)
    name = "cdam_test_eval_distributed"
    _register(name, records, num_classes)
    indices = range(comm.get_rank(), num_images, comm.get_world_size())
    returned = {}
    for label, evaluator_class in (("cdam_d2", SemSegEvaluator), ("detectron2", D2SemSegEvaluator)):
        evaluator = evaluator_class(name, distributed=True, output_dir=os.path.join(root, label))
        returned[label] = _run(evaluator, records, predictions, indices)
    if comm.is_main_process():
        torch.save(dict(returned["cdam_d2"]["sem_seg"]), os.path.join(root, "distributed.pth"))
    else:
        none_returned = {label: result is None for label, result in returned.items()}
        torch.save(none_returned, os.path.join(root, f"rank{comm.get_rank()}.pth"))


@requires_detectron2
class SemSegEvaluatorTest(unittest.TestCase):
    num_classes = 6

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.records, self.predictions = _write_random_dataset(self.root, 50, self.num_classes, 0)
        self.name = "cdam_test_eval_parity"
        _register(self.name, self.records, self.num_classes)

    def tearDown(self):
        _unregister(self.name)
        self._tmp.cleanup()

    def test_equals_detectron2_exactly(self):
        from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

        from cdam_d2.evaluation import SemSegEvaluator

        all_images = range(len(self.records))
        tied = [torch.round(3 * scores) for scores in self.predictions]  # first-maximum ties
        for predictions in (self.predictions, tied):
            ours = _run(SemSegEvaluator(self.name, distributed=False),
                        self.records, predictions, all_images)["sem_seg"]
            theirs = _run(D2SemSegEvaluator(self.name, distributed=False),
                          self.records, predictions, all_images)["sem_seg"]
            self.assertIn("min(IoU, B-Iou)-class1", ours)
            _assert_same_results(self, ours, theirs)

    def test_ignore_label_inside_class_range_equals_detectron2(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

        from cdam_d2.evaluation import SemSegEvaluator

        for record in self.records:  # ignore label 0: no 255 left, class 0 is the ignored one
            path = record["sem_seg_file_name"]
            gt = np.array(Image.open(path))
            gt[gt == 255] = 0
            Image.fromarray(gt).save(path)
        name = "cdam_test_eval_ignore_zero"
        DatasetCatalog.register(name, lambda: self.records)
        MetadataCatalog.get(name).set(
            stuff_classes=[f"class{i}" for i in range(self.num_classes)], ignore_label=0
        )
        try:
            all_images = range(len(self.records))
            ours = _run(SemSegEvaluator(name, distributed=False, boundary_iou=True),
                        self.records, self.predictions, all_images)["sem_seg"]
            theirs = _run(D2SemSegEvaluator(name, distributed=False),
                          self.records, self.predictions, all_images)["sem_seg"]
        finally:
            _unregister(name)
        self.assertIn("BoundaryIoU-class1", ours)
        _assert_same_results(self, ours, theirs)

    def test_size_mismatch_and_bad_labels_raise(self):
        from cdam_d2.evaluation import SemSegEvaluator

        evaluator = SemSegEvaluator(self.name, distributed=False)
        evaluator.reset()
        wrong = self.predictions[0][:, :-1]
        with self.assertRaisesRegex(ValueError, "has size .* but its label map"):
            evaluator.process([{"file_name": self.records[0]["file_name"]}], [{"sem_seg": wrong}])
        extra_channel = torch.cat([self.predictions[0], self.predictions[0][:1]])
        with self.assertRaisesRegex(ValueError, r"shape \(7, .*expected \(6, H, W\)"):
            evaluator.process([{"file_name": self.records[0]["file_name"]}],
                              [{"sem_seg": extra_channel}])
        gt = np.array(Image.open(self.records[1]["sem_seg_file_name"]))
        gt[0, 0] = self.num_classes + 3
        Image.fromarray(gt).save(self.records[1]["sem_seg_file_name"])
        inputs = [{"file_name": self.records[1]["file_name"]}]
        outputs = [{"sem_seg": self.predictions[1]}]
        with self.assertRaisesRegex(ValueError, f"values \\[{self.num_classes + 3}\\]"):
            evaluator.process(inputs, outputs)
        lenient = SemSegEvaluator(self.name, distributed=False, strict=False)
        lenient.reset()
        with self.assertLogs("cdam_d2.evaluation.sem_seg_evaluator", level="WARNING") as logs:
            lenient.process(inputs, outputs)
            lenient.evaluate()
        self.assertIn("1 label pixels outside [0, 6)", "\n".join(logs.output))
        self.assertEqual(int(lenient._conf_matrix[:, -1].sum()), int((gt == 255).sum()) + 1)

    def test_lenient_mode_equals_labels_with_invalid_values_set_to_ignore(self):
        from cdam_d2.evaluation import SemSegEvaluator

        path = self.records[2]["sem_seg_file_name"]
        gt = np.array(Image.open(path))
        images = range(len(self.records))
        results = []
        for value, strict in ((self.num_classes + 1, False), (255, True)):
            gt[3:6, 4:9] = value
            Image.fromarray(gt).save(path)
            evaluator = SemSegEvaluator(self.name, distributed=False, strict=strict,
                                        boundary_iou=True)
            results.append(_run(evaluator, self.records, self.predictions, images)["sem_seg"])
        lenient, reference = results
        _assert_same_results(self, lenient, reference)

    def test_two_cpu_processes_match_single_process(self):
        from cdam_d2.engine import launch  # Detectron2's, releasing the process group at the end

        from cdam_d2.evaluation import SemSegEvaluator

        with tempfile.TemporaryDirectory() as root:
            records, predictions = _write_random_dataset(root, 12, self.num_classes, seed=3)
            launch(_distributed_worker, 2, dist_url="auto", args=(root, 12, self.num_classes))
            merged = torch.load(os.path.join(root, "distributed.pth"), weights_only=True)
            # Non-main ranks return None, as Detectron2's evaluator does.
            self.assertEqual(torch.load(os.path.join(root, "rank1.pth"), weights_only=True),
                             {"cdam_d2": True, "detectron2": True})
            written = []
            for label in ("cdam_d2", "detectron2"):
                with open(os.path.join(root, label, "sem_seg_predictions.json"), "rb") as f:
                    written.append(f.read())
            self.assertEqual(written[0], written[1])  # the gathered predictions, byte for byte
            name = "cdam_test_eval_single"
            _register(name, records, self.num_classes)
            try:
                single = _run(SemSegEvaluator(name, distributed=False), records, predictions,
                              range(12))["sem_seg"]
            finally:
                _unregister(name)
        self.assertIn("BoundaryIoU-class0", single)
        _assert_same_results(self, merged, single)


if __name__ == "__main__":
    unittest.main()
