"""ClusterCAM end to end on the toy VOC layout: train, --resume, --eval-only with CRF, 2 CPU
processes, and the pseudo-label export tool."""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "clustercam_voc_toy.yaml")


def run_tool(script, args, env):
    cmd = [sys.executable, os.path.join(REPO, "tools", script), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc.stdout + proc.stderr


def iterations_logged(output_dir):
    """Training records of metrics.json (evaluation records left out)."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if "total_loss" in r]


@requires_detectron2
class TestClusterCAMTrainNet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from cdam_d2.data.toy import make_toy_datasets

        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.tmp.name, "datasets")
        make_toy_datasets(cls.data)
        cls.env = dict(os.environ, DETECTRON2_DATASETS=cls.data, PYTHONPATH=REPO, OMP_NUM_THREADS="1")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_train_resume_eval_export(self):
        out = os.path.join(self.tmp.name, "single")
        config = ["--config-file", TOY_CONFIG]
        common = ["OUTPUT_DIR", out, "MODEL.DEVICE", "cpu"]
        run_tool("train_net.py", [*config, *common, "SOLVER.MAX_ITER", "4"], self.env)
        self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
        records = iterations_logged(out)
        self.assertIn("loss_seg", records[-1])  # seg phase starts at iteration 2
        self.assertIn("clustercam/alpha_0", records[-1])

        log = run_tool("train_net.py", [*config, "--resume", *common, "SOLVER.MAX_ITER", "6"], self.env)
        self.assertIn("Starting training from iteration 4", log)
        self.assertEqual(max(r["iteration"] for r in iterations_logged(out)), 5)

        log = run_tool("train_net.py", [*config, "--eval-only", *common, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                                        "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "True"], self.env)
        match = re.search(r"copypaste: ([0-9.]+),", log.split("copypaste: mIoU")[-1])
        self.assertIsNotNone(match, log[-2000:])
        self.assertGreaterEqual(float(match.group(1)), 0.0)

        labels_dir = os.path.join(self.tmp.name, "pseudo")
        export = ["--config-file", TOY_CONFIG, "--dataset", "cdam_voc21_sem_seg_train_aug", "--output", labels_dir,
                  "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "MODEL.DEVICE", "cpu"]
        run_tool("export_pseudo_labels.py", export, self.env)
        self._check_pseudo_labels(labels_dir)
        first = sorted(os.listdir(labels_dir))[0]
        os.remove(os.path.join(labels_dir, first))
        log = run_tool("export_pseudo_labels.py", export, self.env)
        self.assertIn("wrote 1 label maps", log)
        self.assertIn("15 already present", log)

    def _check_pseudo_labels(self, labels_dir):
        import numpy as np
        from PIL import Image

        with open(os.path.join(self.data, "VOCdevkit", "VOC2012", "image_labels.json")) as f:
            image_labels = json.load(f)
        names = sorted(os.listdir(labels_dir))
        self.assertEqual(len(names), 16)
        for name in names:
            image_id = name[:-len(".png")]
            label_map = np.array(Image.open(os.path.join(labels_dir, name)))
            jpg = Image.open(os.path.join(self.data, "VOCdevkit", "VOC2012", "JPEGImages", image_id + ".jpg"))
            self.assertEqual(label_map.shape, (jpg.height, jpg.width))
            self.assertTrue(set(np.unique(label_map).tolist()) <= {0, 255, *image_labels[image_id]})

    def test_two_cpu_processes(self):
        out = os.path.join(self.tmp.name, "ddp")
        run_tool("train_net.py", ["--config-file", TOY_CONFIG, "--num-gpus", "2", "--dist-url", "auto",
                                  "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "3",
                                  "SOLVER.IMS_PER_BATCH", "4", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"],
                 self.env)
        self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
        self.assertIn("loss_seg", iterations_logged(out)[-1])


if __name__ == "__main__":
    unittest.main()
