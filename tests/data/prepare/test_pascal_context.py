"""PASCAL Context 459-class .mat -> Context60 PNGs by class name, and the split lists."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image
from scipy.io import savemat

from cdam_d2.data.prepare.pascal_context import (
    context59_table,
    context60_table,
    convert_label_map,
    read_label_names,
    write_context59_pngs,
    write_context60_pngs,
    write_context_splits,
)
from tests.helpers import slow, tool_namespace

# The released Context60 class names without background: the label of each name is its position + 1.
CONTEXT59 = """aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet
car cat ceiling chair cloth computer cow cup curtain dog door fence floor flower food grass ground
horse keyboard light motorbike mountain mouse person plate platform pottedplant road rock sheep
shelves sidewalk sign sky snow sofa table track train tree truck tvmonitor wall water window
wood""".split()


def make_context_tree(root, ids, seed=0):
    """459 names with the 59 classes at shuffled indices, and one random LabelMap per id.

    Returns:
        (dict[int, str], dict[str, np.ndarray]): the names by 1-based index and the LabelMaps.
    """
    rng = np.random.default_rng(seed)
    indices = rng.permutation(np.arange(1, 460))
    names = {int(index): f"other{index}" for index in indices}
    names.update({int(index): name for index, name in zip(indices, CONTEXT59)})
    # Names similar to a class that must not match it.
    names.update({int(indices[59]): "tv", int(indices[60]): "table cloth"})
    context_dir = os.path.join(root, "VOCdevkit", "VOC2010")
    os.makedirs(os.path.join(context_dir, "trainval"))
    with open(os.path.join(context_dir, "labels.txt"), "w") as f:
        f.writelines(f"{index}: {names[index]}\n" for index in sorted(names))
    label_maps = {}
    for image_id in ids:
        label_map = rng.integers(0, 460, size=(7, 9)).astype(np.uint16)
        label_map.flat[:59] = indices[:59]  # every class appears somewhere
        savemat(os.path.join(context_dir, "trainval", f"{image_id}.mat"), {"LabelMap": label_map})
        label_maps[image_id] = label_map
    return names, label_maps


def expected_context60(label_map, names):
    """Independent per-pixel lookup: name of the 459-class index -> position in CONTEXT59 + 1."""
    expected = np.zeros(label_map.shape, dtype=np.uint8)
    for (y, x), value in np.ndenumerate(label_map):
        name = names.get(int(value))
        expected[y, x] = CONTEXT59.index(name) + 1 if name in CONTEXT59 else 0
    return expected


class TestContext60Conversion(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.voc2010 = os.path.join(self.root, "VOCdevkit", "VOC2010")
        self.ids = ["2008_000002", "2008_000003", "2010_001234"]
        self.names, self.label_maps = make_context_tree(self.root, self.ids)

    def tearDown(self):
        self._tmp.cleanup()

    @slow
    def test_labels_follow_class_names(self):
        output_dir = os.path.join(self.voc2010, "SegmentationClassContext")
        summary = write_context60_pngs(self.voc2010, output_dir, workers=2)
        self.assertEqual((summary.written, summary.skipped), (3, 0))
        for image_id, label_map in self.label_maps.items():
            with Image.open(os.path.join(output_dir, f"{image_id}.png")) as image:
                self.assertEqual(image.mode, "L")
                label = np.array(image)
            np.testing.assert_array_equal(label, expected_context60(label_map, self.names))
            self.assertEqual(sorted(np.unique(label.flat[:59])), list(range(1, 60)))

    def test_table_and_order(self):
        self.assertEqual(CONTEXT59, sorted(CONTEXT59))  # why name and sorted-id mapping agree
        table = context60_table(read_label_names(os.path.join(self.voc2010, "labels.txt")))
        self.assertEqual(table.shape, (460,))
        self.assertEqual(table[0], 0)
        self.assertEqual(sorted(table[table > 0]), list(range(1, 60)))

    def test_split_lists_from_voc2010_main(self):
        main_dir = os.path.join(self.voc2010, "ImageSets", "Main")
        os.makedirs(main_dir)
        with open(os.path.join(main_dir, "train.txt"), "w") as f:
            f.write("2008_000003\n2008_000002\n2009_999999\n")  # last one has no .mat
        with open(os.path.join(main_dir, "val.txt"), "w") as f:
            f.write("2010_001234")
        results = write_context_splits(self.voc2010, self.voc2010)
        self.assertEqual(results["train"], (["2008_000002", "2008_000003"], ["2009_999999"]))
        self.assertEqual(results["val"], (["2010_001234"], []))
        split_dir = os.path.join(self.voc2010, "ImageSets", "SegmentationContext")
        with open(os.path.join(split_dir, "val.txt")) as f:
            self.assertEqual(f.read(), "2010_001234\n")

    def test_command_line_with_official_lists_and_resume(self):
        lists = {}
        for split, ids in (("train", self.ids[:2]), ("val", self.ids[2:])):
            lists[split] = os.path.join(self.root, f"{split}_list.txt")
            with open(lists[split], "w") as f:
                f.write("\n".join(ids) + "\n")
        main = tool_namespace("prepare_pascal_context.py")["main"]
        argv = [self.root, "--train-list", lists["train"], "--val-list", lists["val"]]
        main(argv + ["--workers", "1"])
        for folder in ("SegmentationClassContext", "SegmentationClassContext59"):
            listed = sorted(os.listdir(os.path.join(self.voc2010, folder)))
            self.assertEqual(listed, [f"{i}.png" for i in self.ids])
        output_dir = os.path.join(self.voc2010, "SegmentationClassContext")
        with open(os.path.join(self.voc2010, "ImageSets", "SegmentationContext", "train.txt")) as f:
            self.assertEqual(f.read().split(), self.ids[:2])
        summary = write_context60_pngs(self.voc2010, output_dir)
        self.assertEqual((summary.written, summary.skipped), (0, 3))

    def test_context59_ignores_background_and_shifts_the_classes(self):
        output_dir = os.path.join(self.root, "SegmentationClassContext59")
        self.assertEqual(write_context59_pngs(self.voc2010, output_dir).written, 3)
        table = context59_table(self.names)
        for image_id, label_map in self.label_maps.items():
            # Independent rule (mmseg's reduce_zero_label on Context60): 0 -> 255, c -> c - 1.
            context60 = expected_context60(label_map, self.names).astype(int)
            expected = np.where(context60 == 0, 255, context60 - 1)
            with Image.open(os.path.join(output_dir, f"{image_id}.png")) as image:
                self.assertEqual(image.mode, "L")
                np.testing.assert_array_equal(np.array(image), expected)
        self.assertEqual(sorted(set(table.tolist())), list(range(59)) + [255])

    def test_missing_class_name_is_reported(self):
        labels_txt = os.path.join(self.voc2010, "labels.txt")
        names = dict(self.names)
        del names[next(i for i, n in names.items() if n == "wood")]
        with open(labels_txt, "w") as f:
            f.writelines(f"{index}: {name}\n" for index, name in sorted(names.items()))
        with self.assertRaisesRegex(ValueError, "wood"):
            context60_table(read_label_names(labels_txt))

    def test_out_of_range_index_is_reported(self):
        table = np.zeros(460, dtype=np.uint8)
        with self.assertRaisesRegex(ValueError, "460"):
            convert_label_map(np.array([[1, 460]]), table)

    def test_missing_inputs_explain_download(self):
        os.remove(os.path.join(self.voc2010, "labels.txt"))
        with self.assertRaises(FileNotFoundError) as raised:
            write_context60_pngs(self.voc2010, os.path.join(self.root, "out"))
        self.assertIn(os.path.join(self.voc2010, "labels.txt"), str(raised.exception))
        self.assertIn("trainval.tar.gz", str(raised.exception))
        with self.assertRaises(FileNotFoundError) as raised:
            write_context_splits(self.voc2010, self.voc2010)  # no VOC2010 ImageSets/Main
        self.assertIn(os.path.join("ImageSets", "Main", "train.txt"), str(raised.exception))
        self.assertIn("VOCtrainval_03-May-2010.tar", str(raised.exception))


if __name__ == "__main__":
    unittest.main()
