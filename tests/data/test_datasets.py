"""The cdam_* dataset layouts: the toy datasets of every layout read with their true labels, errors that name
the missing file (and the tool to run), and registration (names, metadata, class-name files, roots)."""
import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets import LAYOUTS, load_sem_seg_records
from cdam_d2.data.label_io import read_label_map
from cdam_d2.data.toy import make_toy_datasets, toy_label_maps
from tests.helpers import requires_detectron2

# Detectron2's own registrations that the toy root also serves.
BUILTIN_TOY_SPLITS = {"cityscapes_fine_sem_seg_val", "ade20k_sem_seg_val"}


class ToyDatasetsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = cls._tmp.name
        cls.counts = make_toy_datasets(cls.root)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_every_layout_loads_with_the_true_labels(self):
        self.assertEqual(set(self.counts), set(LAYOUTS) | BUILTIN_TOY_SPLITS)
        truth = toy_label_maps()
        for name, layout in LAYOUTS.items():
            records = load_sem_seg_records(layout, self.root)
            self.assertEqual(len(records), self.counts[name], name)
            for record in records:
                self.assertTrue(os.path.isfile(record["file_name"]))
                self.assertEqual(record["meta"], {"dataset_name": name})
                if layout.label_dir is None:
                    self.assertNotIn("sem_seg_file_name", record)
                    continue
                label = read_label_map(record["sem_seg_file_name"])
                with Image.open(record["file_name"]) as image:
                    self.assertEqual(label.shape, (image.height, image.width))
                np.testing.assert_array_equal(label, truth[name][record["image_id"]], name)
                values = set(np.unique(label).tolist())
                self.assertTrue(values <= set(range(len(layout.classes))) | {255}, values)
                if "image_labels" in record:
                    self.assertEqual(record["image_labels"], sorted(values - {0, 255}))

    def test_label_maps_use_several_classes_and_the_ignore_label(self):
        truth = toy_label_maps()
        for name, maps in truth.items():
            values = set(np.unique(np.concatenate([m.ravel() for m in maps.values()])).tolist())
            self.assertGreaterEqual(len(values - {255}), 3, name)
        for name in ("cdam_voc21_sem_seg_val", "cdam_voc20_sem_seg_val", "cdam_context59_sem_seg_val",
                     "cdam_coco_stuff171_sem_seg_val", "cityscapes_fine_sem_seg_val", "ade20k_sem_seg_val"):
            self.assertTrue(any(255 in m for m in truth[name].values()), name)

    def test_records_follow_split_order_and_are_deterministic(self):
        layout = LAYOUTS["cdam_voc21_sem_seg_val"]
        with open(os.path.join(self.root, layout.split_file)) as f:
            ids = f.read().split()
        records = load_sem_seg_records(layout, self.root)
        self.assertEqual([r["image_id"] for r in records], ids)
        self.assertEqual(records, load_sem_seg_records(layout, self.root))
        coco = load_sem_seg_records(LAYOUTS["cdam_coco_object_sem_seg_val"], self.root)
        coco_ids = [r["image_id"] for r in coco]
        self.assertEqual(coco_ids, sorted(coco_ids))
        self.assertTrue(coco[0]["sem_seg_file_name"].endswith("_instanceTrainIds.png"))

    def test_voc_val_reads_index_pngs_converted_from_the_palette_pngs(self):
        record = load_sem_seg_records(LAYOUTS["cdam_voc21_sem_seg_val"], self.root)[0]
        self.assertIn("SegmentationClassRaw", record["sem_seg_file_name"])
        palette_path = record["sem_seg_file_name"].replace("SegmentationClassRaw", "SegmentationClass")
        with Image.open(palette_path) as image:
            self.assertEqual(image.mode, "P")  # the raw download's encoding
            grey = np.asarray(image.convert("L"))
        with Image.open(record["sem_seg_file_name"]) as image:
            self.assertEqual(image.mode, "L")
        label = read_label_map(record["sem_seg_file_name"])
        np.testing.assert_array_equal(label, read_label_map(palette_path))
        self.assertIn(255, label)  # void outline
        self.assertTrue(set(np.unique(label).tolist()) <= {0, 1, 2, 3, 255})
        # A grey-level read of the palette PNG gives other values (index 1 -> 38 for VOC's palette).
        self.assertFalse(np.array_equal(grey, label))

    def test_rgb_label_map_is_rejected(self):
        path = os.path.join(self.root, "rgb_label.png")
        Image.new("RGB", (4, 4)).save(path)
        with self.assertRaisesRegex(ValueError, "rgb_label.png.*mode 'RGB'"):
            read_label_map(path)


class DatasetErrorsTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        make_toy_datasets(self.root)

    def tearDown(self):
        self._tmp.cleanup()

    def test_missing_root_names_dataset_path_and_env(self):
        layout = LAYOUTS["cdam_context60_sem_seg_val"]
        with self.assertRaises(FileNotFoundError) as ctx:
            load_sem_seg_records(layout, os.path.join(self.root, "nowhere"))
        message = str(ctx.exception)
        self.assertIn("cdam_context60_sem_seg_val", message)
        self.assertIn("VOCdevkit/VOC2010/JPEGImages", message)
        self.assertIn("DETECTRON2_DATASETS", message)

    def test_missing_split_file(self):
        layout = LAYOUTS["cdam_voc21_sem_seg_val"]
        os.remove(os.path.join(self.root, layout.split_file))
        with self.assertRaisesRegex(FileNotFoundError, "split file.*val.txt"):
            load_sem_seg_records(layout, self.root)

    def test_missing_label_map_names_both_files(self):
        layout = LAYOUTS["cdam_voc21_sem_seg_val"]
        record = load_sem_seg_records(layout, self.root)[2]
        os.remove(record["sem_seg_file_name"])
        with self.assertRaises(FileNotFoundError) as ctx:
            load_sem_seg_records(layout, self.root)
        self.assertIn(record["sem_seg_file_name"], str(ctx.exception))
        self.assertIn(record["file_name"], str(ctx.exception))

    def test_missing_conversion_names_the_tool(self):
        import shutil

        layout = LAYOUTS["cdam_voc21_sem_seg_val"]
        shutil.rmtree(os.path.join(self.root, layout.label_dir))
        with self.assertRaises(FileNotFoundError) as ctx:
            load_sem_seg_records(layout, self.root)
        message = str(ctx.exception)
        self.assertIn("label folder", message)
        self.assertIn(os.path.join(self.root, "VOCdevkit/VOC2012/SegmentationClassRaw"), message)
        self.assertIn("tools/prepare_voc.py", message)
        self.assertIn("DETECTRON2_DATASETS", message)

    def test_palette_label_maps_are_rejected_naming_the_tool(self):
        from dataclasses import replace

        layout = replace(
            LAYOUTS["cdam_voc21_sem_seg_val"], label_dir="VOCdevkit/VOC2012/SegmentationClass"
        )
        with self.assertRaises(ValueError) as ctx:
            load_sem_seg_records(layout, self.root)
        message = str(ctx.exception)
        self.assertIn("palette PNG", message)
        self.assertIn("grey levels", message)
        self.assertIn("tools/prepare_voc.py", message)
        rgb_path = load_sem_seg_records(LAYOUTS["cdam_voc21_sem_seg_val"], self.root)[0]
        Image.new("RGB", (4, 4)).save(rgb_path["sem_seg_file_name"])
        with self.assertRaisesRegex(ValueError, "mode 'RGB'"):
            load_sem_seg_records(LAYOUTS["cdam_voc21_sem_seg_val"], self.root)

    def test_image_labels_missing_entry_or_bad_id(self):
        layout = LAYOUTS["cdam_voc21_sem_seg_train_aug"]
        path = os.path.join(self.root, layout.image_labels_file)
        with open(path) as f:
            table = json.load(f)
        first = load_sem_seg_records(layout, self.root)[0]["image_id"]
        table[first] = [21]
        with open(path, "w") as f:
            json.dump(table, f)
        with self.assertRaisesRegex(ValueError, f"{first}.*\\[21\\]"):
            load_sem_seg_records(layout, self.root)
        del table[first]
        with open(path, "w") as f:
            json.dump(table, f)
        with self.assertRaisesRegex(KeyError, first):
            load_sem_seg_records(layout, self.root)


@requires_detectron2
class RegistrationTest(unittest.TestCase):
    def test_names_metadata_and_idempotence(self):
        import cdam_d2
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.modeling import META_ARCH_REGISTRY

        cdam_d2.register_all_cdam_datasets()  # second call is a no-op
        self.assertIn("CDAM", META_ARCH_REGISTRY)
        self.assertIn("ClusterCAM", META_ARCH_REGISTRY)
        expected = {
            "cdam_voc21_sem_seg_val": (21, True, "voc21.txt"),
            "cdam_voc20_sem_seg_val": (20, False, "voc20.txt"),
            "cdam_voc21_sem_seg_train_aug": (21, True, "voc21.txt"),
            "cdam_context60_sem_seg_val": (60, True, "context60.txt"),
            "cdam_context59_sem_seg_val": (59, False, "context59.txt"),
            "cdam_coco_object_sem_seg_val": (81, True, "coco_object81.txt"),
            "cdam_coco_stuff171_sem_seg_val": (171, False, "coco_stuff171.txt"),
            "cdam_coco14_sem_seg_train": (81, True, "coco_object81.txt"),
            "cdam_coco14_sem_seg_val": (81, True, "coco_object81.txt"),
        }
        for name, (num_classes, with_background, names_file) in expected.items():
            self.assertIn(name, DatasetCatalog.list())
            meta = MetadataCatalog.get(name)
            self.assertEqual(len(meta.stuff_classes), num_classes)
            self.assertEqual(len(meta.stuff_colors), num_classes)
            self.assertEqual(meta.stuff_classes[0] == "background", with_background, name)
            self.assertEqual(meta.ignore_label, 255)
            self.assertEqual(meta.evaluator_type, "sem_seg")
            self.assertEqual(meta.class_names_file, names_file)
            self.assertTrue(meta.image_root.endswith(LAYOUTS[name].image_dir))
        # Without background the VOC palette starts at its second colour (aeroplane keeps its own).
        self.assertEqual(MetadataCatalog.get("cdam_voc20_sem_seg_val").stuff_colors[0], [128, 0, 0])
        self.assertEqual(
            MetadataCatalog.get("cdam_voc20_sem_seg_val").stuff_colors,
            MetadataCatalog.get("cdam_voc21_sem_seg_val").stuff_colors[1:],
        )

    def test_class_names_files_match_the_class_lists(self):
        from detectron2.data import MetadataCatalog

        from cdam_d2.data.datasets.class_names import class_names_file_for
        from cdam_d2.cdam.modeling.vocabulary import read_class_names_file

        def squeeze(name):
            return name.replace(" ", "").replace("-", "")

        for name in list(LAYOUTS) + sorted(BUILTIN_TOY_SPLITS):
            classes = MetadataCatalog.get(name).stuff_classes
            vocabulary = read_class_names_file(class_names_file_for(name))
            self.assertEqual(vocabulary.num_classes, len(classes), name)
        # Where the peers' names are the class names (spaces dropped), the order must agree.
        for name in ("cdam_context59_sem_seg_val", "cdam_coco_stuff171_sem_seg_val",
                     "cityscapes_fine_sem_seg_val"):
            first_names = read_class_names_file(class_names_file_for(name)).queries
            classes = MetadataCatalog.get(name).stuff_classes
            self.assertEqual([squeeze(c) for c in classes], [squeeze(q) for q in first_names], name)
        # Detectron2's builtin metadata is never given our keys.
        self.assertIsNone(MetadataCatalog.get("ade20k_sem_seg_val").get("class_names_file", None))
        self.assertEqual(class_names_file_for("ade20k_sem_seg_val"), "ade20k150.txt")

    def test_trainer_evaluates_cityscapes_sem_seg_with_our_evaluator(self):
        from detectron2.config import get_cfg
        from detectron2.data import DatasetCatalog, MetadataCatalog

        import cdam_d2
        from cdam_d2.engine.trainer import Trainer
        from cdam_d2.evaluation import SemSegEvaluator

        cfg = get_cfg()
        cdam_d2.add_cdam_config(cfg)
        record = {"file_name": "a.png", "sem_seg_file_name": "a_gtFine_labelTrainIds.png"}
        for evaluator_type in ("cityscapes_sem_seg", "coco"):
            name = f"cdam_test_evaluator_{evaluator_type}"
            DatasetCatalog.register(name, lambda: [record])
            MetadataCatalog.get(name).set(
                stuff_classes=["road", "car"], ignore_label=255, evaluator_type=evaluator_type
            )
            try:
                if evaluator_type == "coco":
                    with self.assertRaisesRegex(NotImplementedError, "'coco'"):
                        Trainer.build_evaluator(cfg, name, output_folder=tempfile.gettempdir())
                else:
                    evaluator = Trainer.build_evaluator(cfg, name, output_folder=tempfile.gettempdir())
                    self.assertIsInstance(evaluator, SemSegEvaluator)
            finally:
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)

    def test_explicit_root_repoints_registered_names(self):
        import cdam_d2
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from cdam_d2.data.datasets import default_datasets_root

        with tempfile.TemporaryDirectory() as root:
            counts = make_toy_datasets(root)
            try:
                cdam_d2.register_all_cdam_datasets(root)
                records = DatasetCatalog.get("cdam_coco_object_sem_seg_val")
                self.assertEqual(len(records), counts["cdam_coco_object_sem_seg_val"])
                self.assertTrue(records[0]["file_name"].startswith(root))
                self.assertTrue(MetadataCatalog.get("cdam_voc21_sem_seg_val").image_root.startswith(root))
            finally:
                cdam_d2.register_all_cdam_datasets(default_datasets_root())
        self.assertFalse(MetadataCatalog.get("cdam_voc21_sem_seg_val").image_root.startswith(root))

    def test_registered_loader_reads_datasets_root(self):
        from detectron2.data import DatasetCatalog

        from cdam_d2.data.datasets.register import register_sem_seg_layout

        with tempfile.TemporaryDirectory() as root:
            counts = make_toy_datasets(root)
            name = "cdam_test_registration_voc"
            register_sem_seg_layout(LAYOUTS["cdam_voc21_sem_seg_train_aug"], root, name=name)
            try:
                records = DatasetCatalog.get(name)
                self.assertEqual(len(records), counts["cdam_voc21_sem_seg_train_aug"])
                self.assertTrue(all(r["image_labels"] for r in records))
                self.assertEqual(records[0]["meta"], {"dataset_name": name})
            finally:
                from detectron2.data import MetadataCatalog

                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)


if __name__ == "__main__":
    unittest.main()
