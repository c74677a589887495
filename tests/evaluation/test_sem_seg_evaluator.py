"""cdam_d2's SemSegEvaluator against Detectron2's: the same results on random data (also with boundary IoU,
lenient labels and 2 CPU processes), written files included."""
import math
import os
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from tests.helpers import requires_detectron2, slow


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

    @slow
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
