import json
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets import LAYOUTS, load_sem_seg_records
from cdam_d2.data.label_io import read_label_map
from cdam_d2.data.toy import make_toy_datasets
from tests.d2_guard import requires_detectron2


class ToyDatasetsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = cls._tmp.name
        cls.counts = make_toy_datasets(cls.root)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_every_layout_loads_with_matching_labels(self):
        self.assertEqual(set(self.counts), set(LAYOUTS))
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
                values = set(np.unique(label).tolist())
                self.assertTrue(values <= set(range(len(layout.classes))) | {255}, values)
                if "image_labels" in record:
                    self.assertEqual(record["image_labels"], sorted(values - {0, 255}))

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

    def test_voc_palette_png_reads_as_indices(self):
        record = load_sem_seg_records(LAYOUTS["cdam_voc21_sem_seg_val"], self.root)[0]
        with Image.open(record["sem_seg_file_name"]) as image:
            self.assertEqual(image.mode, "P")
            grey = np.asarray(image.convert("L"))
        label = read_label_map(record["sem_seg_file_name"])
        self.assertIn(255, label)  # void outline
        self.assertTrue(set(np.unique(label).tolist()) <= {0, 1, 2, 3, 255})
        # A grey-level read would have produced other values (index 1 -> 38 for VOC's palette).
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
            "cdam_voc21_sem_seg_val": 21,
            "cdam_voc21_sem_seg_train_aug": 21,
            "cdam_context60_sem_seg_val": 60,
            "cdam_coco_object_sem_seg_val": 81,
            "cdam_coco14_sem_seg_train": 81,
            "cdam_coco14_sem_seg_val": 81,
        }
        for name, num_classes in expected.items():
            self.assertIn(name, DatasetCatalog.list())
            meta = MetadataCatalog.get(name)
            self.assertEqual(len(meta.stuff_classes), num_classes)
            self.assertEqual(len(meta.stuff_colors), num_classes)
            self.assertEqual(meta.stuff_classes[0], "background")
            self.assertEqual(meta.ignore_label, 255)
            self.assertEqual(meta.evaluator_type, "sem_seg")

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
