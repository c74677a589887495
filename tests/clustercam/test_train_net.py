"""ClusterCAM end to end on the toy VOC layout: train with the in-training evaluation schedule,
--resume (also of a run killed while writing model_final.pth), --eval-only of the best and the last
checkpoint, 2 CPU processes, and the pseudo-label export tool."""
import json
import os
import tempfile
import unittest

from tests.helpers import (CLUSTERCAM_TOY_CONFIG, copypaste_miou, requires_detectron2, run_tool_script, slow,
                           subprocess_env)


def metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def iterations_logged(output_dir):
    """Training records of metrics.json (evaluation records left out)."""
    return [r for r in metrics(output_dir) if "total_loss" in r]


def model_weights(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@slow
@requires_detectron2
class TestClusterCAMTrainNet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from cdam_d2.data.toy import make_toy_datasets

        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.tmp.name, "datasets")
        make_toy_datasets(cls.data)
        cls.env = subprocess_env(DETECTRON2_DATASETS=cls.data, OMP_NUM_THREADS="1")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_train_resume_eval_export(self):
        out = os.path.join(self.tmp.name, "single")
        config = ["--config-file", CLUSTERCAM_TOY_CONFIG]
        common = ["OUTPUT_DIR", out, "MODEL.DEVICE", "cpu"]
        run_tool_script("train_net.py", [*config, *common, "SOLVER.MAX_ITER", "4"], self.env)
        self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
        records = iterations_logged(out)
        self.assertIn("loss_seg", records[-1])  # seg phase starts at iteration 2
        self.assertIn("clustercam/alpha_0", records[-1])

        log = run_tool_script("train_net.py", [*config, "--resume", *common, "SOLVER.MAX_ITER", "6"], self.env)
        self.assertIn("Starting training from iteration 4", log)
        self.assertRegex(log, r"Resumed best checkpoint: sem_seg/mIoU [0-9.]+ at iteration 3")
        self.assertEqual(max(r["iteration"] for r in iterations_logged(out)), 5)

        # The toy schedule: SEG_START_ITER 2, 2 iterations per epoch. In-training evaluations (one
        # scale, no CRF) after iterations 4 and 6 (metrics.json counts from 0: 3, 5), none before the
        # segmentation phase; each run ends with an evaluation under the full test protocol (the
        # toy's TEST.SCALES and the CRF), logged under final/.
        in_training = {r["iteration"]: r["sem_seg/mIoU"] for r in metrics(out) if "sem_seg/mIoU" in r}
        final = {r["iteration"]: r["final/sem_seg/mIoU"] for r in metrics(out) if "final/sem_seg/mIoU" in r}
        self.assertEqual(sorted(in_training), [3, 5])
        self.assertEqual(sorted(final), [4, 6])

        with open(os.path.join(out, "model_best.json")) as f:
            best = json.load(f)
        self.assertEqual(best["value"], max(in_training.values()))
        self.assertEqual(in_training[best["iteration"]], best["value"])
        single_scale = ["MODEL.CLUSTERCAM.TEST.SCALES", "[1.0]", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"]
        log = run_tool_script("train_net.py", [*config, "--eval-only", *common, "MODEL.WEIGHTS",
                                               os.path.join(out, "model_best.pth"), *single_scale], self.env)
        self.assertAlmostEqual(copypaste_miou(log), best["value"], places=4)

        log = run_tool_script("train_net.py", [*config, "--eval-only", *common, "MODEL.WEIGHTS",
                                               os.path.join(out, "model_final.pth"),
                                               "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "True"], self.env)
        self.assertAlmostEqual(copypaste_miou(log), final[6], places=4)

        # Killed while writing model_final.pth: last_checkpoint still names the last iteration's
        # checkpoint, so --resume trains nothing; it must still leave a loadable final model.
        final_path = os.path.join(out, "model_final.pth")
        with open(final_path, "r+b") as f:
            f.truncate(os.path.getsize(final_path) // 3)
        with open(os.path.join(out, "last_checkpoint"), "w") as f:
            f.write("model_0000005.pth")
        log = run_tool_script("train_net.py", [*config, "--resume", *common, "SOLVER.MAX_ITER", "6"], self.env)
        self.assertIn("Starting training from iteration 6", log)
        self.assertIn("model_final.pth cannot be loaded", log)
        final_weights, last_weights = model_weights(final_path), model_weights(os.path.join(out, "model_0000005.pth"))
        self.assertEqual(sorted(final_weights), sorted(last_weights))
        for key, value in last_weights.items():
            self.assertTrue(value.equal(final_weights[key]), key)

        labels_dir = os.path.join(self.tmp.name, "pseudo")
        export = ["--config-file", CLUSTERCAM_TOY_CONFIG, "--dataset", "cdam_voc21_sem_seg_train_aug",
                  "--output", labels_dir, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), "MODEL.DEVICE", "cpu"]
        run_tool_script("export_pseudo_labels.py", export, self.env)
        self._check_pseudo_labels(labels_dir)
        first = sorted(os.listdir(labels_dir))[0]
        os.remove(os.path.join(labels_dir, first))
        log = run_tool_script("export_pseudo_labels.py", export, self.env)
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
        run_tool_script("train_net.py", ["--config-file", CLUSTERCAM_TOY_CONFIG, "--num-gpus", "2", "--dist-url", "auto",
                                         "OUTPUT_DIR", out, "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "3",
                                         "SOLVER.IMS_PER_BATCH", "4", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"],
                        self.env)
        self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))
        self.assertIn("loss_seg", iterations_logged(out)[-1])


if __name__ == "__main__":
    unittest.main()
