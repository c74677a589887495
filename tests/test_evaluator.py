import math
import os
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from cdam_d2.evaluation.metrics import (
    argmax_labels,
    check_label_values,
    confusion_matrix,
    invalid_to_ignore,
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
        conf = confusion_matrix(self.pred, self.gt, 4, 255)
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
        conf = confusion_matrix(self.pred, self.gt, 4, 255)
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

    def test_argmax_labels_matches_torch_including_ties_and_nan(self):
        scores = torch.randint(0, 3, (5, 7, 9)).float()  # many ties
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            self.assertTrue(torch.equal(argmax_labels(scores.to(dtype)), scores.argmax(0)))
        scores = torch.randn(21, 30, 40)
        self.assertTrue(torch.equal(argmax_labels(scores), scores.argmax(0)))
        scores[7, 3, 4] = float("nan")
        self.assertTrue(torch.equal(argmax_labels(scores), scores.argmax(0)))


    def test_label_value_checks(self):
        bad = torch.tensor([[0, 4], [7, 255]])
        with self.assertRaisesRegex(ValueError, r"gt.png' has values \[4, 7\]"):
            check_label_values(bad, 4, 255, "gt.png")
        check_label_values(self.gt, 4, 255, "ok.png")
        fixed, count = invalid_to_ignore(bad, 4, 255)
        self.assertEqual(count, 2)
        self.assertEqual(fixed.tolist(), [[0, 255], [255, 255]])

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
        ours = _run(SemSegEvaluator(self.name, distributed=False, boundary_iou=True),
                    self.records, self.predictions, all_images)["sem_seg"]
        theirs = _run(D2SemSegEvaluator(self.name, distributed=False),
                      self.records, self.predictions, all_images)["sem_seg"]
        for key in ("mIoU", "fwIoU", "mACC", "pACC"):
            self.assertEqual(ours[key], theirs[key], key)
        for i in range(self.num_classes):
            for prefix in ("IoU", "ACC", "BoundaryIoU"):
                key = f"{prefix}-class{i}"
                if prefix == "BoundaryIoU" and key not in theirs:
                    continue  # stock evaluator computes it only when cv2 is importable
                self.assertEqual(ours[key], theirs[key], key)

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
