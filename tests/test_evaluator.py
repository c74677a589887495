import math
import os
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from cdam_d2.evaluation.metrics import (
    argmax_labels,
    confusion_matrix,
    mask_boundary,
    segmentation_metrics,
)
from tests.d2_guard import requires_detectron2

NAMES = ["background", "a", "b", "c"]


class MetricsTest(unittest.TestCase):
    def setUp(self):
        # 2x4 image; class 3 ("c") never appears in the labels but is predicted once.
        self.gt = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
        self.pred = torch.tensor([[0, 1, 1, 1], [2, 3, 0, 0]])

    def test_confusion_matrix_layout(self):
        conf, invalid = confusion_matrix(self.pred, self.gt, 4, 255)
        self.assertEqual(invalid, {})
        byte_conf, _ = confusion_matrix(self.pred, self.gt.to(torch.uint8), 4, 255)
        self.assertTrue(torch.equal(byte_conf, conf))
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
        for labels in (torch.from_numpy(gt), torch.from_numpy(gt).long()):  # byte and generic
            conf, invalid = confusion_matrix(torch.from_numpy(pred), labels, num_classes, ignore)
            self.assertEqual(conf.dtype, torch.int64)
            self.assertTrue(np.array_equal(conf.numpy(), expected), labels.dtype)
            self.assertEqual(invalid, {30: 3, 254: 1})
        negative = torch.from_numpy(gt).long()
        negative[1, 1] = -2
        self.assertEqual(confusion_matrix(torch.from_numpy(pred), negative, 6, 255)[1][-2], 1)
        # An ignore label inside [0, C) still wins over the class of the same value.
        conf, invalid = confusion_matrix(self.pred, self.gt.to(torch.uint8), 4, 0)
        self.assertEqual(int(conf[:, 0].sum()), 0)
        self.assertEqual(int(conf[:, 4].sum()), 3)  # two 0s and the now invalid 255
        self.assertEqual(invalid, {255: 1})

    def test_boundary_is_map_minus_zero_padded_erosion(self):
        label = torch.zeros(20, 20, dtype=torch.long)
        label[5:15, 5:15] = 2
        boundary = mask_boundary(label, dilation_ratio=0.02)  # radius round(0.02*28.3)=1
        expected = label.clone()
        expected[6:14, 6:14] = 0
        self.assertTrue(torch.equal(boundary, expected))
        full = torch.ones(6, 6, dtype=torch.long)
        ring = mask_boundary(full)
        self.assertEqual(int(ring[1:-1, 1:-1].sum()), 0)
        self.assertEqual(int(ring.sum()), 20)  # the image border erodes against zeros


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


def _distributed_worker(root, num_images, num_classes):
    """Rank r evaluates images r, r+W, ...; returns the merged result on rank 0."""
    from detectron2.utils import comm

    from cdam_d2.evaluation import SemSegEvaluator

    records, predictions = _write_random_dataset(root, num_images, num_classes, 3, write=False)
    name = "cdam_test_eval_distributed"
    _register(name, records, num_classes)
    evaluator = SemSegEvaluator(name, distributed=True)
    indices = range(comm.get_rank(), num_images, comm.get_world_size())
    result = _run(evaluator, records, predictions, indices)
    if comm.is_main_process():
        torch.save(dict(result["sem_seg"]), os.path.join(root, "distributed.pth"))


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
            ours = _run(SemSegEvaluator(self.name, distributed=False, boundary_iou=True),
                        self.records, predictions, all_images)["sem_seg"]
            theirs = _run(D2SemSegEvaluator(self.name, distributed=False),
                          self.records, predictions, all_images)["sem_seg"]
            for key in ("mIoU", "fwIoU", "mACC", "pACC"):
                self.assertEqual(ours[key], theirs[key], key)
            for i in range(self.num_classes):
                for prefix in ("IoU", "ACC", "BoundaryIoU"):
                    key = f"{prefix}-class{i}"
                    if prefix == "BoundaryIoU" and key not in theirs:
                        continue  # stock evaluator computes it only when cv2 is importable
                    self.assertEqual(ours[key], theirs[key], key)

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
        for key, value in ours.items():
            expected = theirs[key]
            self.assertTrue(value == expected or math.isnan(value) and math.isnan(expected), key)

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
        self.assertEqual(int(lenient._conf[:, -1].sum()), int((gt == 255).sum()) + 1)

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
        self.assertEqual(set(lenient), set(reference))
        for key, value in reference.items():
            self.assertTrue(value == lenient[key] or math.isnan(value) and math.isnan(lenient[key]),
                            key)

    def test_two_cpu_processes_match_single_process(self):
        from detectron2.engine import launch

        from cdam_d2.evaluation import SemSegEvaluator

        with tempfile.TemporaryDirectory() as root:
            records, predictions = _write_random_dataset(root, 12, self.num_classes, seed=3)
            launch(_distributed_worker, 2, dist_url="auto", args=(root, 12, self.num_classes))
            merged = torch.load(os.path.join(root, "distributed.pth"), weights_only=True)
            name = "cdam_test_eval_single"
            _register(name, records, self.num_classes)
            try:
                single = _run(SemSegEvaluator(name, distributed=False), records, predictions,
                              range(12))["sem_seg"]
            finally:
                _unregister(name)
        self.assertEqual(set(merged), set(single))
        for key, value in single.items():
            if math.isnan(value):
                self.assertTrue(math.isnan(merged[key]), key)
            else:
                self.assertEqual(merged[key], value, key)


if __name__ == "__main__":
    unittest.main()
