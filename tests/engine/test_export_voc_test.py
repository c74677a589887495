"""tools/export_voc_test.py for CDAM (from the command line, then resumed), ClusterCAM (its predictions are
those of its evaluation) and a second-stage DeepLab on the toy VOC test split: the server layout, the archive
and the palette PNGs."""
import io
import logging
import os
import subprocess
import sys
import tarfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets.builtin_meta import voc_palette_bytes
from tests.helpers import (CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, REPO, SECOND_STAGE_TOY_CONFIG, TOOLS,
                           RegisteredToyDatasets, import_tool, requires_detectron2, slow, subprocess_env)

CONFIGS = {"cdam": CDAM_TOY_CONFIG, "clustercam": CLUSTERCAM_TOY_CONFIG, "deeplab": SECOND_STAGE_TOY_CONFIG}
SERVER_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


@requires_detectron2
class ExportVOCTestToolTest(RegisteredToyDatasets, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tool = import_tool("export_voc_test")

    def test_records(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        records = DatasetCatalog.get("cdam_voc21_sem_seg_test")
        self.assertEqual(len(records), 3)
        self.assertTrue(all("sem_seg_file_name" not in r and "image_labels" not in r for r in records))
        self.assertEqual(len(MetadataCatalog.get("cdam_voc21_sem_seg_test").stuff_classes), 21)
        with open(os.path.join(self.root, "VOCdevkit", "VOC2012", "image_labels.json")) as f:
            self.assertNotIn(records[0]["image_id"], f.read())  # no labels of any kind for the test split

    def check_submission(self, out):
        """The server layout, the archive and the PNGs; returns {image_id: labels}."""
        from detectron2.data import DatasetCatalog

        records = DatasetCatalog.get("cdam_voc21_sem_seg_test")
        names = [r["image_id"] + ".png" for r in records]
        self.assertEqual(sorted(os.listdir(os.path.join(out, SERVER_DIR))), sorted(names))
        with tarfile.open(os.path.join(out, "results.tar.gz")) as tar:
            members = tar.getmembers()
            self.assertEqual([m.name for m in members if m.isdir()],
                             ["results", "results/VOC2012", "results/VOC2012/Segmentation", SERVER_DIR])
            files = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
        self.assertEqual(sorted(files), sorted(f"{SERVER_DIR}/{name}" for name in names))
        predictions = {}
        for record in records:
            data = files[f"{SERVER_DIR}/{record['image_id']}.png"]
            with open(os.path.join(out, SERVER_DIR, record["image_id"] + ".png"), "rb") as f:
                self.assertEqual(f.read(), data)
            with Image.open(io.BytesIO(data)) as image, Image.open(record["file_name"]) as photo:
                self.assertEqual(image.format, "PNG")
                self.assertEqual(image.mode, "P")
                self.assertEqual(image.size, photo.size)
                self.assertEqual(image.getpalette()[:63], voc_palette_bytes()[:63])
                labels = np.array(image)
            self.assertLessEqual(int(labels.max()), 20)
            predictions[record["image_id"]] = labels
        return predictions

    @slow
    def test_cdam_from_the_command_line_then_resume(self):
        out = os.path.join(self._tmp.name, "cdam")
        env = subprocess_env(DETECTRON2_DATASETS=self.root, OMP_NUM_THREADS="1")
        command = [sys.executable, os.path.join(TOOLS, "export_voc_test.py"), "--config-file",
                   CONFIGS["cdam"], "--output", out, "MODEL.DEVICE", "cpu"]
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(done.returncode, 0, done.stderr[-5000:])
        self.assertIn("wrote 3 predictions (0 already present)", done.stdout + done.stderr)
        self.assertIn("comp6 cdam_voc21_sem_seg_test: 100%", done.stderr)  # progress bar
        first = self.check_submission(out)

        os.remove(os.path.join(out, SERVER_DIR, "2009_000001.png"))
        os.remove(os.path.join(out, "results.tar.gz"))
        with self.assertLogs("cdam_d2.export_voc_test", logging.INFO) as logs:
            self.tool.main(["--config-file", CONFIGS["cdam"], "--output", out, "MODEL.DEVICE", "cpu"])
        self.assertIn("wrote 1 predictions (2 already present)", logs.output[-1])
        again = self.check_submission(out)
        for image_id, labels in first.items():
            np.testing.assert_array_equal(again[image_id], labels)

    @slow
    def test_clustercam_predictions_are_its_evaluation_predictions(self):
        import torch
        from detectron2.evaluation import DatasetEvaluator

        from cdam_d2.engine import Trainer, load_cfg

        class Collect(DatasetEvaluator):
            def __init__(self):
                self.labels = {}

            def process(self, inputs, outputs):
                for inp, output in zip(inputs, outputs):
                    self.labels[inp["image_id"]] = output["sem_seg"].argmax(0).numpy()

            def evaluate(self):
                return {}

        opts = ["MODEL.DEVICE", "cpu", "MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "1",
                "DATASETS.TEST", "('cdam_voc21_sem_seg_test',)"]
        cfg, _ = load_cfg(CONFIGS["clustercam"], opts)
        model = Trainer.build_model(cfg)
        weights = os.path.join(self._tmp.name, "clustercam.pth")
        torch.save({"model": model.state_dict()}, weights)
        out = os.path.join(self._tmp.name, "clustercam")
        self.tool.main(["--config-file", CONFIGS["clustercam"], "--output", out, *opts, "MODEL.WEIGHTS", weights])
        exported = self.check_submission(out)
        collect = Collect()
        Trainer.test(cfg, model, evaluators=[collect])  # the evaluation path: test mapper, scales, CRF
        self.assertEqual(set(collect.labels), set(exported))
        for image_id, labels in collect.labels.items():
            np.testing.assert_array_equal(exported[image_id], labels)

    def test_second_stage_deeplab_and_wrong_class_count(self):
        out = os.path.join(self._tmp.name, "deeplab")
        self.tool.main(["--config-file", CONFIGS["deeplab"], "--output", out, "MODEL.DEVICE", "cpu"])
        self.check_submission(out)
        with self.assertRaisesRegex(ValueError, "60 classes.*21"):
            self.tool.main(["--config-file", CONFIGS["deeplab"], "--output", out, "--dataset",
                            "cdam_context60_sem_seg_val", "MODEL.DEVICE", "cpu"])


if __name__ == "__main__":
    unittest.main()
