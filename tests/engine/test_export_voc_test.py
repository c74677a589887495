"""VOC test-server export: the shared resumable PNG writer (no detectron2) and tools/export_voc_test.py
for CDAM, ClusterCAM and a second-stage DeepLab on the toy VOC test split."""
import importlib.util
import io
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets.builtin_meta import pascal_colormap, voc_palette_bytes
from cdam_d2.data.label_export import LabelPNGWriter, export_label_maps, image_size
from tests.d2_guard import requires_detectron2
from tests.toy_datasets import RegisteredToyDatasets
from tests.process_env import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "cdam": os.path.join(REPO, "configs", "quick_schedules", "cdam_voc21_toy_eval.yaml"),
    "clustercam": os.path.join(REPO, "configs", "quick_schedules", "clustercam_voc_toy.yaml"),
    "deeplab": os.path.join(REPO, "configs", "second_stage", "deeplabv3plus_voc_toy.yaml"),
}
SERVER_DIR = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


def write_images(root, sizes):
    rng = np.random.default_rng(0)
    records = []
    for index, (height, width) in enumerate(sizes):
        path = os.path.join(root, f"2009_{index:06d}.jpg")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        records.append({"file_name": path, "image_id": f"2009_{index:06d}"})
    return records


def random_labels(record, seed=0):
    height, width = image_size(record)
    return np.random.default_rng(seed).integers(0, 21, (height, width), dtype=np.uint8)


class LabelExportTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.records = write_images(self._tmp.name, [(30, 41), (17, 23), (25, 25)])
        self.out = os.path.join(self._tmp.name, "out")
        self.calls = []

    def tearDown(self):
        self._tmp.cleanup()

    def predict(self, batch):
        self.calls.append([r["image_id"] for r in batch])
        return [random_labels(r) for r in batch]

    def run_export(self, palette=voc_palette_bytes(), batch_size=2):
        writer = LabelPNGWriter(self.out, palette=palette)
        batches = [self.records[i:i + batch_size] for i in range(0, len(self.records), batch_size)]
        return export_label_maps(batches, writer, self.predict, len(self.records), "test")

    def test_palette_pngs_hold_the_indices_and_the_voc_colours(self):
        self.assertEqual(self.run_export(), (3, 0))
        for record in self.records:
            with Image.open(os.path.join(self.out, record["image_id"] + ".png")) as image:
                self.assertEqual(image.mode, "P")
                self.assertEqual(image.getpalette()[: 3 * 21], [c for rgb in pascal_colormap(21) for c in rgb])
                np.testing.assert_array_equal(np.array(image), random_labels(record))
        self.assertEqual(sorted(os.listdir(self.out)), [r["image_id"] + ".png" for r in self.records])

    def test_single_channel_pngs_without_palette(self):
        self.run_export(palette=None)
        with Image.open(os.path.join(self.out, "2009_000000.png")) as image:
            self.assertEqual(image.mode, "L")
            np.testing.assert_array_equal(np.array(image), random_labels(self.records[0]))

    def test_resume_skips_verified_files_and_rewrites_damaged_ones(self):
        self.run_export()
        self.calls.clear()
        self.assertEqual(self.run_export(), (0, 3))
        self.assertEqual(self.calls, [])  # nothing predicted again
        path = os.path.join(self.out, "2009_000000.png")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:  # truncated, as a full disk or an interrupted copy leaves it
            f.write(data[: len(data) // 2])
        Image.fromarray(np.zeros((5, 5), np.uint8)).convert("P").save(os.path.join(self.out, "2009_000001.png"))
        Image.fromarray(random_labels(self.records[2])).save(os.path.join(self.out, "2009_000002.png"))  # mode L
        with self.assertLogs("cdam_d2.label_export", logging.WARNING) as logs:
            self.assertEqual(self.run_export(), (3, 0))
        self.assertEqual(len(logs.records), 3)
        self.assertIn("2009_000000.png", logs.output[0])
        self.assertEqual(self.calls, [["2009_000000", "2009_000001"], ["2009_000002"]])
        for record in self.records:
            with Image.open(os.path.join(self.out, record["image_id"] + ".png")) as image:
                np.testing.assert_array_equal(np.array(image), random_labels(record))

    def test_interrupted_export_resumes_without_partial_files(self):
        def failing(batch):
            if any(r["image_id"] == "2009_000002" for r in batch):
                raise KeyboardInterrupt
            return self.predict(batch)

        writer = LabelPNGWriter(self.out, palette=voc_palette_bytes())
        with self.assertRaises(KeyboardInterrupt):
            export_label_maps([[r] for r in self.records], writer, failing, 3, "test")
        self.assertEqual(sorted(os.listdir(self.out)), ["2009_000000.png", "2009_000001.png"])
        self.calls.clear()
        self.assertEqual(self.run_export(batch_size=1), (1, 2))
        self.assertEqual(self.calls, [["2009_000002"]])

    def test_prediction_of_the_wrong_size_raises(self):
        writer = LabelPNGWriter(self.out)
        with self.assertRaisesRegex(ValueError, "2009_000000.jpg.*size"):
            export_label_maps([self.records[:1]], writer, lambda batch: [np.zeros((3, 3), np.uint8)], 1, "test")

    def test_image_size_follows_exif_orientation(self):
        path = os.path.join(self._tmp.name, "turned.jpg")
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated 90°: stored 20 wide, 10 high, shown 10 wide, 20 high
        Image.new("RGB", (20, 10)).save(path, exif=exif)
        self.assertEqual(image_size({"file_name": path}), (20, 10))
        self.assertEqual(image_size({"file_name": path, "height": 7, "width": 9}), (7, 9))


def load_tool():
    spec = importlib.util.spec_from_file_location("export_voc_test", os.path.join(REPO, "tools", "export_voc_test.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@requires_detectron2
class ExportVOCTestToolTest(RegisteredToyDatasets, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tool = load_tool()

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

    def test_cdam_from_the_command_line_then_resume(self):
        out = os.path.join(self._tmp.name, "cdam")
        env = subprocess_env(DETECTRON2_DATASETS=self.root, OMP_NUM_THREADS="1")
        command = [sys.executable, os.path.join(REPO, "tools", "export_voc_test.py"), "--config-file",
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
