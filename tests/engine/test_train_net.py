"""tools/train_net.py end to end on toy data: --eval-only with 1 and 2 CPU processes, and CDAM on several
datasets (cdam_ and Detectron2 builtin names) in one run; a launched worker releases its process group."""
import json
import math
import os
import tempfile
import unittest

import numpy as np
import torch

from tests.helpers import (CDAM_TOY_CONFIG, one_template_file, requires_detectron2, run_tool_script, slow,
                           subprocess_env, toy_cfg)


def run_train_net(args, datasets_root, output_dir):
    env = subprocess_env(DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="1")
    return run_tool_script("train_net.py", [*args, "OUTPUT_DIR", output_dir, "MODEL.DEVICE", "cpu"], env)


@slow
@requires_detectron2
class TrainNetEvalTest(unittest.TestCase):
    def test_toy_eval_one_and_two_processes_agree(self):
        from cdam_d2.data.toy import make_toy_datasets

        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "datasets")
            make_toy_datasets(root)
            results = []
            for num_processes in (1, 2):
                output_dir = os.path.join(tmp, f"out{num_processes}")
                log = run_train_net(
                    ["--config-file", CDAM_TOY_CONFIG, "--eval-only",
                     "--num-gpus", str(num_processes), "--dist-url", "auto"],
                    root, output_dir,
                )
                self.assertIn("copypaste: mIoU", log)  # the metrics table is printed
                path = os.path.join(output_dir, "inference", "cdam_voc21_sem_seg_val",
                                    "sem_seg_evaluation.pth")
                results.append(torch.load(path, weights_only=True))
        single, double = results
        self.assertIn("mIoU", single)
        self.assertFalse(math.isnan(single["mIoU"]))
        self.assertEqual(single.keys(), double.keys())
        for key, value in single.items():
            if math.isnan(value):
                self.assertTrue(math.isnan(double[key]), key)
            else:
                self.assertAlmostEqual(value, double[key], places=9, msg=key)


@slow
@requires_detectron2
class TrainNetSeveralDatasetsTest(unittest.TestCase):
    def test_each_dataset_gets_its_own_vocabulary(self):
        from pycocotools import mask as mask_util

        from cdam_d2.data.toy import make_toy_datasets

        datasets = ("cdam_voc21_sem_seg_val", "ade20k_sem_seg_val", "cityscapes_fine_sem_seg_val")
        with tempfile.TemporaryDirectory() as tmp:
            root, output_dir = os.path.join(tmp, "datasets"), os.path.join(tmp, "out")
            make_toy_datasets(root)  # the raw layouts of every dataset, prepared
            templates = one_template_file(tmp)
            opts = ["MODEL.CDAM.TEMPLATES", templates, "DATASETS.TEST", repr(datasets),
                    "CDAM_D2.EVALUATOR.WRITE_PREDICTIONS", "True"]
            log = run_train_net(["--config-file", CDAM_TOY_CONFIG, "--eval-only", *opts], root, output_dir)
            results, predictions = {}, {}
            for name in datasets:
                folder = os.path.join(output_dir, "inference", name)
                results[name] = torch.load(os.path.join(folder, "sem_seg_evaluation.pth"), weights_only=True)
                with open(os.path.join(folder, "sem_seg_predictions.json")) as f:
                    predictions[name] = json.load(f)
            # Text for every dataset is encoded before the first image is segmented.
            first_inference = log.index("Start inference")
            for name in datasets:
                self.assertLess(log.index(f"CDAM text queries of {name}"), first_inference, name)
            # Each evaluation scored predictions over its own classes (the evaluator checks C per image).
            for name, count in zip(datasets, (21, 150, 19)):
                self.assertEqual(sum(key.startswith("IoU-") for key in results[name]), count, name)
            # The written ADE20K labels are those of the same model with ADE20K's vocabulary.
            from cdam_d2.cdam.mapper import CDAMTestMapper
            from detectron2.data.datasets import load_sem_seg
            from detectron2.modeling import build_model

            cfg = toy_cfg(CDAM_TOY_CONFIG, *opts)
            model = build_model(cfg).eval()
            ade = os.path.join(root, "ADEChallengeData2016")
            records = load_sem_seg(os.path.join(ade, "annotations_detectron2", "validation"),
                                   os.path.join(ade, "images", "validation"), gt_ext="png", image_ext="jpg")
            mapper = CDAMTestMapper(cfg, dataset_name="ade20k_sem_seg_val")
            for record in records:
                mapped = mapper(record)
                self.assertEqual(mapped["meta"]["dataset_name"], "ade20k_sem_seg_val")
                expected = model([mapped])[0]["sem_seg"].argmax(0).numpy()
                written = np.full(expected.shape, -1)
                for entry in predictions["ade20k_sem_seg_val"]:
                    if os.path.basename(entry["file_name"]) == os.path.basename(record["file_name"]):
                        written[mask_util.decode(entry["segmentation"]).astype(bool)] = entry["category_id"]
                np.testing.assert_array_equal(written, expected)


def _record_process_group(record):
    from torch import distributed as dist

    record.append(dist.is_initialized())
    return "result"


@requires_detectron2
class LaunchReleasesProcessGroupTest(unittest.TestCase):
    def test_worker_destroys_its_group_after_main(self):
        from torch import distributed as dist

        from cdam_d2.engine.cli import _run_then_release_process_group

        with tempfile.TemporaryDirectory() as tmp:
            dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'store')}", rank=0,
                                    world_size=1)
            try:
                record = []
                self.assertEqual(_run_then_release_process_group(_record_process_group, (record,)), "result")
                self.assertEqual(record, [True])  # main ran inside the group ...
                self.assertFalse(dist.is_initialized())  # ... which is gone afterwards
            finally:
                if dist.is_initialized():
                    dist.destroy_process_group()


if __name__ == "__main__":
    unittest.main()
