"""A re-run of every tool that skips finished files verifies them: a finished file damaged
afterwards (truncated, or of the wrong size) is written again and correct, a good one is left
alone. Covers tools/prepare_coco_object.py (both sources), prepare_coco14.py,
prepare_pascal_context.py and export_pseudo_labels.py."""
import os
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from tests.data.prepare.test_coco import COCO_CATEGORY_IDS, SyntheticInstances, write_png
from tests.data.prepare.test_pascal_context import make_context_tree
from tests.helpers import CLUSTERCAM_TOY_CONFIG, requires_detectron2, run_tool_main, slow, tool_namespace, truncate_half


def identity(path):
    """Changes whenever the file is written again (atomic writes create a new inode)."""
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns


def read(path):
    with Image.open(path) as image:
        return np.array(image)


class DamagedOutputsMixin:
    """``damage_and_rerun`` truncates the first output, shrinks the second, keeps the others."""

    def damage_and_rerun(self, output_dir, rerun):
        names = sorted(name for name in os.listdir(output_dir) if name.endswith(".png"))
        self.assertGreaterEqual(len(names), 3)
        paths = [os.path.join(output_dir, name) for name in names]
        expected = {path: read(path) for path in paths}
        truncate_half(paths[0])
        Image.fromarray(np.zeros((1, 1), np.uint8)).save(paths[1])  # decodes, but the wrong size
        kept = {path: identity(path) for path in paths[2:]}
        log = rerun()
        for path in paths:
            np.testing.assert_array_equal(read(path), expected[path])
        self.assertEqual({path: identity(path) for path in paths[2:]}, kept)  # not rewritten
        return log


class PreparationToolsTest(DamagedOutputsMixin, unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def assert_reported(self, log):
        self.assertIn("wrote 2, already done", log)
        self.assertIn("warning: 2 existing file(s) did not decode completely", log)

    def test_coco_object_from_stuffthingmaps(self):
        annotation_dir = os.path.join(self.root, "coco_stuff164k", "annotations", "val2017")
        rng = np.random.default_rng(0)
        pool = np.array([c - 1 for c in COCO_CATEGORY_IDS] + list(range(91, 182)))
        for index in range(4):
            write_png(os.path.join(annotation_dir, f"{index:012d}.png"), rng.choice(pool, size=(6, 7)))
        argv = [self.root, "--workers", "1"]
        run_tool_main("prepare_coco_object.py", argv)
        self.assertEqual(len([n for n in os.listdir(annotation_dir) if "TrainIds" in n]), 4)

        def rerun():
            return run_tool_main("prepare_coco_object.py", argv)

        self.assert_reported(self.damage_and_rerun_outputs(annotation_dir, rerun))

    def damage_and_rerun_outputs(self, annotation_dir, rerun):
        """Outputs live next to their inputs here: damage only the ``_instanceTrainIds`` files."""
        outputs = os.path.join(self.root, "outputs_only")
        os.makedirs(outputs)
        for name in os.listdir(annotation_dir):
            if name.endswith("_instanceTrainIds.png"):
                os.symlink(os.path.join(annotation_dir, name), os.path.join(outputs, name))
        return self.damage_and_rerun(outputs, rerun)

    @slow
    def test_coco_object_from_instances(self):
        json_path = os.path.join(self.root, "coco_stuff164k", "annotations", "instances_val2017.json")
        SyntheticInstances("val2017").save(json_path)
        argv = [self.root, "--source", "instances", "--workers", "2"]
        run_tool_main("prepare_coco_object.py", argv)
        annotation_dir = os.path.join(self.root, "coco_stuff164k", "annotations", "val2017")
        log = self.damage_and_rerun_outputs(annotation_dir, lambda: run_tool_main("prepare_coco_object.py", argv))
        self.assert_reported(log)

    def test_coco14_label_maps(self):
        instances_dir = os.path.join(self.root, "annotations")
        synthetic = SyntheticInstances("val2014")
        synthetic.data["annotations"].append(dict(synthetic.data["annotations"][0], id=9, image_id=5))
        synthetic.save(os.path.join(instances_dir, "instances_val2014.json"))
        argv = [self.root, "--instances-dir", instances_dir, "--workers", "1"]
        run_tool_main("prepare_coco14.py", argv)
        mask_dir = os.path.join(self.root, "COCO14", "SegmentationClass", "val2014")
        self.assert_reported(self.damage_and_rerun(mask_dir, lambda: run_tool_main("prepare_coco14.py", argv)))

    def test_pascal_context(self):
        ids = ["2008_000002", "2008_000003", "2010_001234"]
        make_context_tree(self.root, ids)
        lists = {}
        for split, split_ids in (("train", ids[:2]), ("val", ids[2:])):
            lists[split] = os.path.join(self.root, f"{split}.txt")
            with open(lists[split], "w") as f:
                f.write("\n".join(split_ids) + "\n")
        argv = [self.root, "--train-list", lists["train"], "--val-list", lists["val"], "--workers", "1"]
        run_tool_main("prepare_pascal_context.py", argv)
        output_dir = os.path.join(self.root, "VOCdevkit", "VOC2010", "SegmentationClassContext")
        log = self.damage_and_rerun(output_dir, lambda: run_tool_main("prepare_pascal_context.py", argv))
        self.assertIn("Context60: wrote 2, already done 1", log)


@requires_detectron2
class ExportPseudoLabelsTest(DamagedOutputsMixin, unittest.TestCase):
    def test_rerun_rewrites_damaged_label_maps_only(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from cdam_d2.data.datasets.layouts import LAYOUTS
        from cdam_d2.data.datasets.register import register_sem_seg_layout
        from cdam_d2.data.toy import make_toy_datasets

        tool = tool_namespace("export_pseudo_labels.py")

        def export():
            torch.manual_seed(0)  # the same random model in every run, as a checkpoint would give
            return tool["export"](cfg, name, args.output, kind="cam")  # no PAR: faster, same skip logic

        with tempfile.TemporaryDirectory() as root:
            datasets = os.path.join(root, "datasets")
            make_toy_datasets(datasets)
            split = os.path.join(datasets, LAYOUTS["cdam_voc21_sem_seg_train_aug"].split_file)
            with open(split) as f:
                ids = f.read().split()[:4]  # four images keep the test fast
            with open(split, "w") as f:
                f.write("\n".join(ids) + "\n")
            name = "cdam_test_export_voc21_train_aug"
            register_sem_seg_layout(LAYOUTS["cdam_voc21_sem_seg_train_aug"], datasets, name=name)
            self.addCleanup(DatasetCatalog.remove, name)
            self.addCleanup(MetadataCatalog.remove, name)
            args = tool["parse_args"](["--config-file", CLUSTERCAM_TOY_CONFIG, "--dataset", name, "--output",
                                       os.path.join(root, "pseudo"), "MODEL.DEVICE", "cpu",
                                       "MODEL.CLUSTERCAM.PSEUDO_LABEL.CAM_SCALES", "(1.0,)"])
            cfg = tool["setup_cfg"](args)
            self.assertEqual(export(), (4, 0))
            counts = self.damage_and_rerun(args.output, export)
        self.assertEqual(counts, (2, 2))


if __name__ == "__main__":
    unittest.main()
