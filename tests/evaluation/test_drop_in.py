"""cdam_d2's SemSegEvaluator used exactly where and how Detectron2's is: constructor keywords,
defaults, result keys, written files, and another project's ``build_evaluator`` unchanged."""
import json
import os
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from tests.helpers import requires_detectron2
from tests.evaluation.test_sem_seg_evaluator import (
    _assert_same_results,
    _register,
    _run,
    _unregister,
    _write_random_dataset,
)

# The evaluator part of a peer project's tools/train_net.py (the pattern of Mask2Former's and
# DeepLab's build_evaluator, and of projects whose labels need their own sem_seg_loading_fn),
# kept as text so that it runs unchanged apart from the line that imports SemSegEvaluator.
PEER_TRAIN_NET = '''
import os

import numpy as np
from PIL import Image
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils.file_io import PathManager
{import_line}


def red_channel_labels(filename, dtype=None):
    """Labels stored as class + 1 in the red channel of RGB PNGs; 0 is unlabelled."""
    with PathManager.open(filename, "rb") as f:
        array = np.array(Image.open(f), dtype=dtype)[..., 0]
    array -= 1
    array[array < 0] = 255
    return array


def build_evaluator(cfg, dataset_name, output_folder=None):
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_list = []
    evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
    if evaluator_type == "sem_seg":
        evaluator_list.append(
            SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
        )
    if evaluator_type == "rgb_sem_seg":
        evaluator_list.append(
            SemSegEvaluator(
                dataset_name,
                distributed=True,
                output_dir=output_folder,
                sem_seg_loading_fn=red_channel_labels,
            )
        )
    if len(evaluator_list) == 0:
        raise NotImplementedError(dataset_name)
    if len(evaluator_list) == 1:
        return evaluator_list[0]
    return DatasetEvaluators(evaluator_list)
'''


class StoredPredictions(torch.nn.Module):
    """A 'model' that returns the prepared scores of each input image."""

    def __init__(self, scores_by_file):
        super().__init__()
        self.scores_by_file = scores_by_file

    def forward(self, batched_inputs):
        return [{"sem_seg": self.scores_by_file[x["file_name"]]} for x in batched_inputs]


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@requires_detectron2
class DropInTest(unittest.TestCase):
    num_classes = 6

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.records, self.predictions = _write_random_dataset(self.root, 12, self.num_classes, 7)
        self.name = "cdam_test_eval_drop_in"
        _register(self.name, self.records, self.num_classes)

    def tearDown(self):
        _unregister(self.name)
        self._tmp.cleanup()

    def _register_rgb_copy(self, name):
        """The same labels as RGB PNGs (class + 1 in red, 0 for ignored), another evaluator_type."""
        from detectron2.data import DatasetCatalog, MetadataCatalog

        records = []
        for record in self.records:
            labels = np.array(Image.open(record["sem_seg_file_name"])).astype(np.int64) + 1
            labels[labels == 256] = 0
            rgb = np.stack([labels, np.full_like(labels, 9), labels[::-1]], axis=-1)
            path = record["sem_seg_file_name"].replace(".png", "_rgb.png")
            Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path)
            records.append({"file_name": record["file_name"], "sem_seg_file_name": path})
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(stuff_classes=[f"class{i}" for i in range(self.num_classes)],
                                      ignore_label=255, evaluator_type="rgb_sem_seg")

    def test_peer_build_evaluator_runs_unchanged_with_the_same_results_and_files(self):
        from detectron2.config import get_cfg
        from detectron2.data import MetadataCatalog
        from detectron2.evaluation import inference_on_dataset

        from cdam_d2.evaluation import SemSegEvaluator

        # Dataset category ids differ from the contiguous ones: the JSON must map them back.
        MetadataCatalog.get(self.name).set(
            stuff_dataset_id_to_contiguous_id={10 * i + 3: i for i in range(self.num_classes)}
        )
        rgb_name = "cdam_test_eval_drop_in_rgb"
        self._register_rgb_copy(rgb_name)
        model = StoredPredictions({r["file_name"]: p for r, p in zip(self.records, self.predictions)})
        batches = [[{"file_name": r["file_name"]} for r in self.records[i:i + 4]]
                   for i in range(0, len(self.records), 4)]
        imports = {"detectron2": "from detectron2.evaluation import SemSegEvaluator",
                   "cdam_d2": "from cdam_d2.evaluation import SemSegEvaluator"}
        try:
            for dataset in (self.name, rgb_name):
                results, files = {}, {}
                for label, import_line in imports.items():
                    script = {}
                    exec(PEER_TRAIN_NET.format(import_line=import_line), script)
                    cfg = get_cfg()
                    cfg.OUTPUT_DIR = os.path.join(self.root, dataset, label)
                    evaluator = script["build_evaluator"](cfg, dataset)
                    if label == "cdam_d2":
                        self.assertIsInstance(evaluator, SemSegEvaluator)
                    results[label] = inference_on_dataset(model, batches, evaluator)["sem_seg"]
                    files[label] = _read(os.path.join(cfg.OUTPUT_DIR, "inference",
                                                      "sem_seg_predictions.json"))
                self.assertIn("BoundaryIoU-class0", results["cdam_d2"])
                _assert_same_results(self, results["cdam_d2"], results["detectron2"])
                self.assertEqual(files["cdam_d2"], files["detectron2"])
                written = json.loads(files["cdam_d2"])
                self.assertEqual(set(p["file_name"] for p in written),
                                 set(r["file_name"] for r in self.records))
                mapped = dataset == self.name
                self.assertEqual({p["category_id"] for p in written},
                                 {10 * i + 3 if mapped else i for i in range(self.num_classes)})
            # Without the loading function, cdam_d2's default reader refuses the RGB labels.
            plain = SemSegEvaluator(rgb_name, distributed=False)
            plain.reset()
            with self.assertRaisesRegex(ValueError, "image mode 'RGB'"):
                plain.process(*batches[0:1], [{"sem_seg": self.predictions[0]}])
        finally:
            _unregister(rgb_name)

    def test_output_files_match_detectron2(self):
        from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

        from cdam_d2.evaluation import SemSegEvaluator

        images = range(len(self.records))
        written = {}
        for label, evaluator_class in (("cdam_d2", SemSegEvaluator),
                                       ("detectron2", D2SemSegEvaluator)):
            output_dir = os.path.join(self.root, label)
            results = _run(evaluator_class(self.name, distributed=False, output_dir=output_dir),
                           self.records, self.predictions, images)["sem_seg"]
            written[label] = (results, _read(os.path.join(output_dir, "sem_seg_predictions.json")))
        self.assertEqual(written["cdam_d2"][1], written["detectron2"][1])
        saved = torch.load(os.path.join(self.root, "cdam_d2", "sem_seg_evaluation.pth"),
                           weights_only=True)  # plain floats: loads without full pickle
        _assert_same_results(self, saved, written["detectron2"][0])

    def test_boundary_iou_from_16_classes_equals_detectron2_without_uint8_wrap(self):
        from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

        from cdam_d2.evaluation import SemSegEvaluator

        class D2InInt64(D2SemSegEvaluator):
            """Detectron2's evaluator with its boundary bands widened before (C+1)*b_pred+b_gt."""

            def _mask_to_boundary(self, mask, dilation_ratio=0.02):
                return super()._mask_to_boundary(mask, dilation_ratio).astype(np.int64)

        num_classes, name = 21, "cdam_test_eval_drop_in_21"
        with tempfile.TemporaryDirectory() as root:
            records, predictions = _write_random_dataset(root, 6, num_classes, 8)
            _register(name, records, num_classes)
            try:
                images = range(len(records))
                ours, int64, stock = (
                    _run(evaluator_class(name, distributed=False), records, predictions,
                         images)["sem_seg"]
                    for evaluator_class in (SemSegEvaluator, D2InInt64, D2SemSegEvaluator)
                )
            finally:
                _unregister(name)
        _assert_same_results(self, ours, int64)
        boundary_keys = [k for k in stock if k.startswith(("BoundaryIoU-", "min(IoU, B-Iou)-"))]
        self.assertEqual(len(boundary_keys), 2 * num_classes)
        self.assertTrue(any(ours[key] != stock[key] for key in boundary_keys))  # stock wraps
        _assert_same_results(self, {k: v for k, v in ours.items() if k not in boundary_keys},
                             {k: v for k, v in stock.items() if k not in boundary_keys})

    def test_sem_seg_loading_fn_is_called_like_detectron2(self):
        from cdam_d2.evaluation import SemSegEvaluator

        calls = []

        def loading_fn(path, dtype=None):
            calls.append((path, dtype))
            return np.array(Image.open(path), dtype=dtype)

        ours = _run(SemSegEvaluator(self.name, distributed=False, sem_seg_loading_fn=loading_fn),
                    self.records, self.predictions, range(3))["sem_seg"]
        default = _run(SemSegEvaluator(self.name, distributed=False),
                       self.records, self.predictions, range(3))["sem_seg"]
        self.assertEqual(calls, [(r["sem_seg_file_name"], int) for r in self.records[:3]])
        _assert_same_results(self, ours, default)
        evaluator = SemSegEvaluator(self.name, distributed=False,
                                    sem_seg_loading_fn=lambda path, dtype: np.zeros((2, 3, 4)))
        evaluator.reset()
        with self.assertRaisesRegex(ValueError, r"shape \(2, 3, 4\); expected \(H, W\)"):
            evaluator.process([{"file_name": self.records[0]["file_name"]}],
                              [{"sem_seg": self.predictions[0]}])

    def test_deprecated_arguments_warn_and_act_like_detectron2(self):
        from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

        from cdam_d2.evaluation import SemSegEvaluator

        for record in self.records:  # no 255 left: the ignore label passed as argument is 0
            labels = np.array(Image.open(record["sem_seg_file_name"]))
            labels[labels == 255] = 0
            Image.fromarray(labels).save(record["sem_seg_file_name"])
        with self.assertLogs("cdam_d2.evaluation.sem_seg_evaluator", level="WARNING") as logs:
            ours = SemSegEvaluator(self.name, distributed=False, num_classes=6, ignore_label=0)
        self.assertEqual(
            [record.getMessage() for record in logs.records],
            [f"SemSegEvaluator({arg}) is deprecated! It should be obtained from metadata."
             for arg in ("num_classes", "ignore_label")],
        )
        theirs = D2SemSegEvaluator(self.name, distributed=False, num_classes=6, ignore_label=0)
        images = range(len(self.records))
        ours, theirs = (_run(e, self.records, self.predictions, images)["sem_seg"]
                        for e in (ours, theirs))
        self.assertTrue(np.isnan(ours["IoU-class0"]))  # class 0 is the ignored one now
        _assert_same_results(self, ours, theirs)
        with self.assertRaisesRegex(ValueError, r"num_classes=7\) disagrees with the 6"):
            SemSegEvaluator(self.name, num_classes=7)

    def test_bad_options_fail_at_construction(self):
        from detectron2.data import MetadataCatalog

        from cdam_d2.evaluation import SemSegEvaluator

        with self.assertRaisesRegex(ValueError, "Unknown metric convention 'voc'"):
            SemSegEvaluator(self.name, convention="voc")
        with self.assertRaisesRegex(ValueError, "write_predictions=True needs an output_dir"):
            SemSegEvaluator(self.name, write_predictions=True)
        MetadataCatalog.get(self.name).set(stuff_dataset_id_to_contiguous_id={7: 0, 8: 1, 9: 3})
        with self.assertRaisesRegex(ValueError, r"contiguous ids \[2, 4, 5\]"):
            SemSegEvaluator(self.name, output_dir=self.root)
        SemSegEvaluator(self.name, output_dir=self.root, write_predictions=False)  # nothing written

    def test_split_without_label_maps_is_refused_by_name(self):
        from cdam_d2.evaluation import SemSegEvaluator

        name = "cdam_test_eval_images_only"
        images_only = [{k: v for k, v in r.items() if k != "sem_seg_file_name"} for r in self.records]
        _register(name, images_only, self.num_classes)
        try:
            with self.assertRaisesRegex(ValueError, f"'{name}' has 12 images without label maps.*export_voc_test"):
                SemSegEvaluator(name)
        finally:
            _unregister(name)

    def test_255_classes_leave_boundary_iou_out_as_detectron2(self):
        from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator

        from cdam_d2.evaluation import SemSegEvaluator

        num_classes, name = 255, "cdam_test_eval_drop_in_255"
        with tempfile.TemporaryDirectory() as root:
            records, predictions = _write_random_dataset(root, 2, num_classes, 9)
            _register(name, records, num_classes)
            try:
                with self.assertRaisesRegex(ValueError, "fewer than 255 classes, got 255"):
                    SemSegEvaluator(name, boundary_iou=True)
                with self.assertLogs("cdam_d2.evaluation.sem_seg_evaluator", level="WARNING"):
                    ours = SemSegEvaluator(name, distributed=False)
                results = [_run(e, records, predictions, range(2))["sem_seg"]
                           for e in (ours, D2SemSegEvaluator(name, distributed=False))]
            finally:
                _unregister(name)
        self.assertNotIn("BoundaryIoU-class0", results[0])
        _assert_same_results(self, *results)


if __name__ == "__main__":
    unittest.main()
