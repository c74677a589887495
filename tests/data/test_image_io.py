"""Damaged inputs name themselves: dataset images (both mappers, a whole evaluation) and the
ClusterCAM DeiT weights file."""
import os
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CDAM_TOY = os.path.join(REPO, "configs", "quick_schedules", "cdam_voc21_toy_eval.yaml")
CLUSTERCAM_TOY = os.path.join(REPO, "configs", "quick_schedules", "clustercam_voc_toy.yaml")


def write_truncated_jpeg(path, size=(40, 50)):
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    with open(path, "rb+") as f:
        f.truncate(os.path.getsize(path) // 2)


class OrientedSizeTest(unittest.TestCase):
    def test_size_follows_exif_orientation_without_decoding(self):
        from cdam_d2.data.image_io import UnreadableImageError, oriented_image_size

        with tempfile.TemporaryDirectory() as root:
            for orientation, expected in ((1, (30, 40)), (6, (40, 30)), (8, (40, 30)), (3, (30, 40))):
                path = os.path.join(root, f"o{orientation}.jpg")
                exif = Image.Exif()
                exif[0x0112] = orientation
                Image.new("RGB", (40, 30)).save(path, exif=exif)
                self.assertEqual(oriented_image_size({"file_name": path}), expected, orientation)
            broken = os.path.join(root, "broken.jpg")
            with open(broken, "wb") as f:
                f.write(b"not an image")
            with self.assertRaisesRegex(UnreadableImageError, "broken.jpg"):
                oriented_image_size({"file_name": broken, "meta": {"dataset_name": "d"}})


@requires_detectron2
class TruncatedImageTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def assert_names_image_and_dataset(self, message, path, dataset):
        self.assertIn(path, message)
        self.assertIn(f"dataset '{dataset}'", message)
        self.assertIn("download or extract it again", message)

    def test_both_mappers_name_the_image_and_its_dataset(self):
        from cdam_d2.data.image_io import UnreadableImageError
        from cdam_d2.cdam.mapper import CDAMTestMapper
        from cdam_d2.clustercam.mapper import ClusterCAMDatasetMapper

        path = os.path.join(self.root, "2011_000001.jpg")
        write_truncated_jpeg(path)
        record = {"file_name": path, "image_id": "2011_000001", "image_labels": [1],
                  "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}}
        mappers = {"CDAMTestMapper": CDAMTestMapper(image_format="RGB"),
                   "ClusterCAMDatasetMapper": ClusterCAMDatasetMapper(is_train=False)}
        for name, mapper in mappers.items():
            with self.subTest(name), self.assertRaises(UnreadableImageError) as raised:
                mapper(record)
            self.assert_names_image_and_dataset(str(raised.exception), path, "cdam_voc21_sem_seg_val")
            self.assertIsInstance(raised.exception.__cause__, OSError)  # PIL's error stays attached
        missing = dict(record, file_name=os.path.join(self.root, "missing.jpg"), meta={})
        with self.assertRaisesRegex(UnreadableImageError, r"'[^']*missing\.jpg': FileNotFoundError"):
            mappers["CDAMTestMapper"](missing)

    def test_evaluation_with_a_truncated_image_names_it(self):
        """Trainer.test over a registered dataset, images read in a DataLoader worker."""
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.modeling import build_model

        from cdam_d2.data.datasets.layouts import LAYOUTS
        from cdam_d2.data.datasets.register import register_sem_seg_layout
        from cdam_d2.data.toy import make_toy_datasets
        from cdam_d2.engine import Trainer, load_cfg

        datasets = os.path.join(self.root, "datasets")
        make_toy_datasets(datasets)
        name = "cdam_test_truncated_voc21_val"
        register_sem_seg_layout(LAYOUTS["cdam_voc21_sem_seg_val"], datasets, name=name)
        self.addCleanup(DatasetCatalog.remove, name)
        self.addCleanup(MetadataCatalog.remove, name)
        damaged = DatasetCatalog.get(name)[1]["file_name"]
        write_truncated_jpeg(damaged)
        cfg = load_cfg(CLUSTERCAM_TOY, ["MODEL.DEVICE", "cpu", "DATASETS.TEST", f"('{name}',)",
                                        "DATALOADER.NUM_WORKERS", "1", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False",
                                        "OUTPUT_DIR", os.path.join(self.root, "out")])[0]
        model = build_model(cfg).eval()
        with self.assertRaises(OSError) as raised:
            Trainer.test(cfg, model)
        self.assert_names_image_and_dataset(str(raised.exception), damaged, name)


@requires_detectron2
class TruncatedDeiTWeightsTest(unittest.TestCase):
    def test_truncated_pretrained_file_names_the_key(self):
        from cdam_d2.clustercam.modeling.pretrained import load_deit_state_dict
        from cdam_d2.weights import WeightsFileError

        with tempfile.TemporaryDirectory() as root:
            path = os.path.join(root, "deit_small_patch16_224-cd65a155.pth")
            torch.save({"model": {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8)}}, path)
            self.assertEqual(set(load_deit_state_dict(path)), {"cls_token", "pos_embed"})
            with open(path, "rb+") as f:
                f.truncate(os.path.getsize(path) // 2)
            with self.assertRaises(WeightsFileError) as raised:
                load_deit_state_dict(path)
        message = str(raised.exception)
        for expected in (path, "MODEL.CLUSTERCAM.PRETRAINED", "download deit_small_patch16_224-cd65a155.pth again"):
            self.assertIn(expected, message)


if __name__ == "__main__":
    unittest.main()
