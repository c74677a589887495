"""Images in, RGB arrays out (cdam_d2.data.image_io): 16-bit and other formats, EXIF orientation, and
damaged dataset images that name themselves (both mappers, a whole evaluation)."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from tests.helpers import CLUSTERCAM_TOY_CONFIG, random_image, requires_detectron2, slow, toy_cfg, truncate_half


def write_truncated_jpeg(path, size=(40, 50)):
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    truncate_half(path)


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

    @slow
    def test_evaluation_with_a_truncated_image_names_it(self):
        """Trainer.test over a registered dataset, images read in a DataLoader worker."""
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.modeling import build_model

        from cdam_d2.data.datasets.layouts import LAYOUTS
        from cdam_d2.data.datasets.register import register_sem_seg_layout
        from cdam_d2.data.toy import make_toy_datasets
        from cdam_d2.engine import Trainer

        datasets = os.path.join(self.root, "datasets")
        make_toy_datasets(datasets)
        name = "cdam_test_truncated_voc21_val"
        register_sem_seg_layout(LAYOUTS["cdam_voc21_sem_seg_val"], datasets, name=name)
        self.addCleanup(DatasetCatalog.remove, name)
        self.addCleanup(MetadataCatalog.remove, name)
        damaged = DatasetCatalog.get(name)[1]["file_name"]
        write_truncated_jpeg(damaged)
        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "DATASETS.TEST", f"('{name}',)", "DATALOADER.NUM_WORKERS", "1",
                      "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False", "OUTPUT_DIR", os.path.join(self.root, "out"))
        model = build_model(cfg).eval()
        with self.assertRaises(OSError) as raised:
            Trainer.test(cfg, model)
        self.assert_names_image_and_dataset(str(raised.exception), damaged, name)


class TestImageInputs(unittest.TestCase):
    def test_sixteen_bit_grey_png_is_scaled_not_clipped(self):
        from PIL import Image

        from cdam_d2.data.image_io import read_image_rgb

        values = np.array([[0, 257, 128 * 257], [200 * 257, 65535, 1000]], dtype=np.uint16)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "grey16.png")
            Image.fromarray(values).save(path)
            self.assertIn(Image.open(path).mode, ("I;16", "I"))
            rgb = read_image_rgb(path)
        self.assertEqual((rgb.shape, rgb.dtype), ((2, 3, 3), np.uint8))
        expected = np.rint(values / 257.0).astype(np.uint8)
        for channel in range(3):
            np.testing.assert_array_equal(rgb[:, :, channel], expected)

    def test_formats_and_errors(self):
        from PIL import Image

        from cdam_d2.data.image_io import image_to_rgb, read_image_rgb

        rgb = random_image(0, (5, 7))
        np.testing.assert_array_equal(image_to_rgb(rgb[:, :, ::-1], "BGR"), rgb)
        np.testing.assert_array_equal(image_to_rgb(rgb, "RGB"), rgb)
        np.testing.assert_array_equal(image_to_rgb(Image.fromarray(rgb)), rgb)
        np.testing.assert_array_equal(image_to_rgb(np.dstack([rgb, np.full((5, 7), 255, np.uint8)]), "RGB"), rgb)
        np.testing.assert_array_equal(image_to_rgb(rgb[:, :, 0]), np.repeat(rgb[:, :, :1], 3, axis=2))
        np.testing.assert_array_equal(image_to_rgb(rgb.astype(np.uint16) * 257, "RGB"), rgb)
        with self.assertRaisesRegex(TypeError, "float32"):
            image_to_rgb(rgb.astype(np.float32))
        with self.assertRaisesRegex(ValueError, "shape"):
            image_to_rgb(np.zeros((4, 4, 2), np.uint8))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "broken.jpg")
            with open(path, "wb") as f:
                f.write(b"not an image")
            with self.assertRaisesRegex(OSError, "broken.jpg"):
                read_image_rgb(path)
            path = os.path.join(folder, "exif.jpg")
            tall = random_image(1, (20, 10))
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
            Image.fromarray(tall).save(path, exif=exif, quality=95)
            self.assertEqual(read_image_rgb(path).shape, (10, 20, 3))


if __name__ == "__main__":
    unittest.main()
