"""tools/train_net.py end to end on toy data: --eval-only with 1 and 2 CPU processes."""
import math
import os
import subprocess
import sys
import tempfile
import unittest

import torch

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_EVAL_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "cdam_voc21_toy_eval.yaml")


def run_train_net(args, datasets_root, output_dir):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="1")
    command = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), *args,
               "OUTPUT_DIR", output_dir, "MODEL.DEVICE", "cpu"]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"train_net failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done.stdout + done.stderr


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
                    ["--config-file", TOY_EVAL_CONFIG, "--eval-only",
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


if __name__ == "__main__":
    unittest.main()
