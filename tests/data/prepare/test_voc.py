"""VOC palette PNGs -> index PNGs, VOC20 from them, and the SegmentationClassAug check."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets.builtin_meta import voc_palette_bytes
from cdam_d2.utils.files import temp_path_for
from cdam_d2.data.prepare.voc_segmentation import (
    repair_palette_pngs,
    write_voc20_pngs,
    write_voc21_index_pngs,
)
from tests.helpers import slow, tool_namespace



def save_palette_png(path, indices):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(indices.astype(np.uint8), mode="L").convert("P")
    image.putpalette(voc_palette_bytes())
    image.save(path)


def read_png(path):
    with Image.open(path) as image:
        return image.mode, np.array(image)


class VocConversionTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.voc = os.path.join(self.root, "VOCdevkit", "VOC2012")
        rng = np.random.default_rng(0)
        values = np.array(list(range(21)) + [255])
        self.labels = {f"2007_00000{i}": rng.choice(values, size=(5, 7)) for i in range(3)}
        self.labels["2007_000000"].flat[:22] = values  # every value occurs
        for image_id, labels in self.labels.items():
            save_palette_png(os.path.join(self.voc, "SegmentationClass", image_id + ".png"), labels)

    def tearDown(self):
        self._tmp.cleanup()

    def output(self, folder, image_id):
        return os.path.join(self.voc, folder, image_id + ".png")

    @slow
    def test_index_pngs_keep_every_index_and_voc20_drops_background(self):
        summary = write_voc21_index_pngs(self.voc, workers=2)
        self.assertEqual((summary.written, summary.skipped), (3, 0))
        self.assertEqual(write_voc20_pngs(self.voc).written, 3)
        for image_id, labels in self.labels.items():
            mode, index = read_png(self.output("SegmentationClassRaw", image_id))
            self.assertEqual(mode, "L")
            np.testing.assert_array_equal(index, labels)
            # Independent VOC20 rule: class c (1..20) -> c - 1; background and void -> 255.
            expected = np.where((labels >= 1) & (labels <= 20), labels - 1, 255)
            mode, voc20 = read_png(self.output("SegmentationClassVOC20", image_id))
            self.assertEqual(mode, "L")
            np.testing.assert_array_equal(voc20, expected)
        # The grey read these files replace: VOC's palette makes index 1 -> 38 and 255 -> 220.
        with Image.open(self.output("SegmentationClass", "2007_000000")) as image:
            grey = np.array(image.convert("L"))
        self.assertEqual(grey.flat[1], 38)
        self.assertEqual(grey.flat[21], 220)

    def test_resume_skips_finished_files_and_redoes_interrupted_ones(self):
        finished = self.output("SegmentationClassRaw", "2007_000001")
        os.makedirs(os.path.dirname(finished))
        Image.fromarray(np.full((5, 7), 7, dtype=np.uint8)).save(finished)
        leftover = temp_path_for(self.output("SegmentationClassRaw", "2007_000002"))
        with open(leftover, "w") as f:
            f.write("interrupted")
        summary = write_voc21_index_pngs(self.voc)
        self.assertEqual((summary.written, summary.skipped), (2, 1))
        self.assertEqual(read_png(finished)[1].max(), 7)  # left alone
        self.assertFalse(os.path.exists(leftover))

    def test_foreign_value_names_the_file(self):
        save_palette_png(self.output("SegmentationClass", "2007_000009"), np.full((2, 2), 21))
        with self.assertRaisesRegex(ValueError, r"2007_000009.png.*\[21\]"):
            write_voc21_index_pngs(self.voc)

    def test_segmentation_class_aug_palette_files_are_rewritten_index_files_kept(self):
        aug = os.path.join(self.voc, "SegmentationClassAug")
        save_palette_png(os.path.join(aug, "a.png"), self.labels["2007_000000"])
        Image.fromarray(self.labels["2007_000001"].astype(np.uint8)).save(os.path.join(aug, "b.png"))
        kept_before = os.stat(os.path.join(aug, "b.png")).st_mtime_ns
        self.assertEqual(repair_palette_pngs(aug), (1, 1))
        mode, labels = read_png(os.path.join(aug, "a.png"))
        self.assertEqual(mode, "L")
        np.testing.assert_array_equal(labels, self.labels["2007_000000"])
        self.assertEqual(os.stat(os.path.join(aug, "b.png")).st_mtime_ns, kept_before)
        self.assertEqual(repair_palette_pngs(aug), (0, 2))  # idempotent
        Image.new("RGB", (3, 3)).save(os.path.join(aug, "c.png"))
        with self.assertRaisesRegex(ValueError, "c.png.*'RGB'"):
            repair_palette_pngs(aug)

    def test_command_line(self):
        main = tool_namespace("prepare_voc.py")["main"]
        main([self.root, "--workers", "1"])
        for folder in ("SegmentationClassRaw", "SegmentationClassVOC20"):
            self.assertEqual(
                sorted(os.listdir(os.path.join(self.voc, folder))),
                sorted(f"{i}.png" for i in self.labels),
            )

    def test_missing_folder_explains_download(self):
        with self.assertRaises(FileNotFoundError) as raised:
            write_voc21_index_pngs(os.path.join(self.root, "elsewhere"))
        self.assertIn(os.path.join(self.root, "elsewhere", "SegmentationClass"), str(raised.exception))
        self.assertIn("VOCtrainval_11-May-2012.tar", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
