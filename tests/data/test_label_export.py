"""The shared resumable label-PNG writer (cdam_d2.data.label_export): palette or single-channel PNGs of the
predicted indices, verified files skipped on a re-run and damaged ones written again, no partial file after an
interruption, and image sizes that follow the EXIF orientation. Needs no detectron2."""
import logging
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets.builtin_meta import pascal_colormap, voc_palette_bytes
from cdam_d2.data.label_export import LabelPNGWriter, export_label_maps, image_size


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


if __name__ == "__main__":
    unittest.main()
