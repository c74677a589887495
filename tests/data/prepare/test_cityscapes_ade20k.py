"""Cityscapes train ids and ADE20K's Detectron2 labels, checked against the official tools."""
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.prepare.ade20k import write_detectron2_pngs
from cdam_d2.data.prepare.cityscapes import train_id_mapping, write_train_id_pngs
from cdam_d2.data.prepare.label_mapping import LabelMapping
from cdam_d2.data.toy import write_raw_toy_datasets
from tests.helpers import slow, subprocess_env, tool_namespace

# cityscapesscripts' labels.py: (name, label id, train id) of the 19 evaluated classes.
CITYSCAPES_19 = (
    ("road", 7, 0), ("sidewalk", 8, 1), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("pole", 17, 5), ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8),
    ("terrain", 22, 9), ("sky", 23, 10), ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13),
    ("truck", 27, 14), ("bus", 28, 15), ("train", 31, 16), ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
)


def detectron2_ade20k_script():
    """Detectron2's datasets/prepare_ade20k_sem_seg.py next to an editable install, or None."""
    module_spec = importlib.util.find_spec("detectron2")
    if module_spec is None or not module_spec.origin:
        return None
    path = os.path.join(
        os.path.dirname(os.path.dirname(module_spec.origin)), "datasets", "prepare_ade20k_sem_seg.py"
    )
    return path if os.path.isfile(path) else None


def read_png(path):
    with Image.open(path) as image:
        return np.array(image)


class LabelMappingTest(unittest.TestCase):
    def test_unknown_values_are_listed(self):
        mapping = LabelMapping.from_dict({0: 5, 3: 1})
        self.assertEqual(mapping(np.array([[0, 3, 3]])).tolist(), [[5, 1, 1]])
        with self.assertRaisesRegex(ValueError, r"\[1, 4\]"):
            mapping(np.array([[0, 1, 4]]))


class CityscapesTest(unittest.TestCase):
    def test_train_ids_of_every_label_id(self):
        train_id = {label_id: t for _, label_id, t in CITYSCAPES_19}
        values = np.arange(34, dtype=np.uint8)[None]
        expected = [train_id.get(v, 255) for v in range(34)]
        self.assertEqual(train_id_mapping()(values).tolist(), [expected])
        with self.assertRaisesRegex(ValueError, "34"):
            train_id_mapping()(np.array([[34]], dtype=np.uint8))

    def test_names_file_follows_the_train_id_order(self):
        from cdam_d2.cdam.modeling.vocabulary import read_class_names_file

        names = read_class_names_file("cityscapes19.txt").queries
        self.assertEqual(
            [n.replace(" ", "") for n, _, _ in CITYSCAPES_19], [q.replace(" ", "") for q in names]
        )


class RawToyConversionTest(unittest.TestCase):
    """The toy's raw Cityscapes / ADE20K layouts converted by our tools and by the official ones."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.raw = os.path.join(cls._tmp.name, "raw")
        write_raw_toy_datasets(cls.raw)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def copy_of_raw(self, name):
        path = os.path.join(self._tmp.name, name)
        shutil.copytree(self.raw, path)
        return path

    def test_cityscapes_command_line_and_resume(self):
        root = self.copy_of_raw("cityscapes_cli")
        tool_namespace("prepare_cityscapes.py")["main"]([root, "--workers", "1"])
        gt = os.path.join(root, "cityscapes", "gtFine", "val")
        for city in os.listdir(gt):
            for name in os.listdir(os.path.join(gt, city)):
                if name.endswith("_gtFine_labelIds.png"):
                    ids = read_png(os.path.join(gt, city, name))
                    train = read_png(os.path.join(gt, city, name.replace("labelIds", "labelTrainIds")))
                    np.testing.assert_array_equal(train, train_id_mapping()(ids))
        summary = write_train_id_pngs(os.path.join(root, "cityscapes"), "val")
        self.assertEqual((summary.written, summary.skipped), (0, 3))

    @slow
    def test_cityscapes_equals_create_train_id_label_imgs(self):
        if importlib.util.find_spec("cityscapesscripts") is None:
            self.skipTest("cityscapesscripts is not installed (pip install cityscapesscripts)")
        ours, theirs = self.copy_of_raw("cs_ours"), self.copy_of_raw("cs_theirs")
        write_train_id_pngs(os.path.join(ours, "cityscapes"), "val")
        env = subprocess_env(CITYSCAPES_DATASET=os.path.join(theirs, "cityscapes"))
        subprocess.run(
            [sys.executable, "-m", "cityscapesscripts.preparation.createTrainIdLabelImgs"],
            env=env, check=True, capture_output=True, timeout=120,
        )
        self.assert_same_outputs(ours, theirs, "_gtFine_labelTrainIds.png", count=3)

    @slow
    def test_ade20k_equals_detectron2s_script(self):
        ours = self.copy_of_raw("ade_ours")
        tool_namespace("prepare_ade20k.py")["main"]([ours, "--workers", "1"])
        raw_dir = os.path.join(ours, "ADEChallengeData2016", "annotations", "validation")
        for name in os.listdir(raw_dir):  # independent rule: 0 -> 255, v -> v - 1
            raw = read_png(os.path.join(raw_dir, name)).astype(int)
            converted = read_png(raw_dir.replace("annotations", "annotations_detectron2") + "/" + name)
            np.testing.assert_array_equal(converted, np.where(raw == 0, 255, raw - 1))
        script = detectron2_ade20k_script()
        if script is None:
            self.skipTest("Detectron2's datasets/prepare_ade20k_sem_seg.py is not next to its install")
        theirs = self.copy_of_raw("ade_theirs")
        env = subprocess_env(DETECTRON2_DATASETS=theirs)
        subprocess.run([sys.executable, script], env=env, check=True, capture_output=True, timeout=120)
        self.assert_same_outputs(ours, theirs, ".png", count=5, under="annotations_detectron2")

    def test_ade20k_value_above_150_names_the_file(self):
        root = self.copy_of_raw("ade_bad")
        ade = os.path.join(root, "ADEChallengeData2016")
        Image.fromarray(np.full((2, 2), 151, np.uint8)).save(
            os.path.join(ade, "annotations", "validation", "ADE_val_00000009.png")
        )
        with self.assertRaisesRegex(ValueError, r"ADE_val_00000009.png.*\[151\]"):
            write_detectron2_pngs(ade, "validation")

    def assert_same_outputs(self, ours, theirs, suffix, count, under=""):
        found = 0
        for directory, _, names in os.walk(theirs):
            for name in names:
                path = os.path.join(directory, name)
                if name.endswith(suffix) and under in path and ("TrainIds" in name or under):
                    mine = path.replace(theirs, ours)
                    with Image.open(mine) as a, Image.open(path) as b:
                        self.assertEqual(a.mode, b.mode, name)
                    np.testing.assert_array_equal(read_png(mine), read_png(path), name)
                    found += 1
        self.assertEqual(found, count)


if __name__ == "__main__":
    unittest.main()
