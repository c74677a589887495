"""Exported pseudo-labels as a Detectron2 dataset (cdam_d2.data.datasets.pseudo_labels): records in the order
of the source dataset pointing at the label maps, errors that name missing or palette files, registration with
the source's metadata, the stock DatasetMapper reading the indices, and the second stage's training
augmentation padding with the ignore label."""
import os
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.datasets.builtin_meta import voc_palette_bytes
from cdam_d2.data.datasets.pseudo_labels import load_pseudo_label_records
from cdam_d2.data.label_io import read_label_map
from cdam_d2.utils.files import save_label_png
from tests.helpers import SECOND_STAGE_TOY_CONFIG, requires_detectron2


def toy_records(root, sizes):
    """Records with JPEGs of the given (H, W) sizes and random 'pseudo-labels' (values 0..20, 255)."""
    rng = np.random.default_rng(0)
    records, labels = [], {}
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for index, (height, width) in enumerate(sizes):
        image_id = f"img_{index}"
        path = os.path.join(root, "images", image_id + ".jpg")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        label = rng.integers(0, 21, (height, width), dtype=np.uint8)
        label[: height // 4] = 255
        labels[image_id] = label
        records.append({"file_name": path, "image_id": image_id, "meta": {"dataset_name": "source"},
                        "image_labels": [1]})
    return records, labels


class PseudoLabelRecordsTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.records, self.labels = toy_records(self.root, [(20, 30), (25, 17), (16, 16)])
        self.label_dir = os.path.join(self.root, "pseudo")
        os.makedirs(self.label_dir)
        for image_id, label in self.labels.items():
            save_label_png(label, os.path.join(self.label_dir, image_id + ".png"))

    def tearDown(self):
        self._tmp.cleanup()

    def test_records_keep_order_and_point_at_the_label_maps(self):
        records = load_pseudo_label_records(self.records, self.label_dir, "pl", "source")
        self.assertEqual([r["file_name"] for r in records], [r["file_name"] for r in self.records])
        for record in records:
            self.assertEqual(record["meta"], {"dataset_name": "pl"})
            self.assertEqual(record["image_labels"], [1])  # other keys pass through
            np.testing.assert_array_equal(read_label_map(record["sem_seg_file_name"]), self.labels[record["image_id"]])
        self.assertEqual(self.records[0]["meta"], {"dataset_name": "source"})  # source left alone

    def test_missing_label_map_names_the_files_and_the_export_command(self):
        os.remove(os.path.join(self.label_dir, "img_1.png"))
        with self.assertRaises(FileNotFoundError) as caught:
            load_pseudo_label_records(self.records, self.label_dir, "pl", "source")
        message = str(caught.exception)
        self.assertIn("1 of the 3 images", message)
        self.assertIn("img_1.png", message)
        self.assertIn("tools/export_pseudo_labels.py", message)
        self.assertIn(f"--output {self.label_dir}", message)
        with self.assertRaises(FileNotFoundError) as caught:
            load_pseudo_label_records(self.records, os.path.join(self.root, "nowhere"), "pl", "source")
        self.assertIn("does not exist", str(caught.exception))

    def test_palette_label_map_is_refused(self):
        path = os.path.join(self.label_dir, "img_2.png")
        image = Image.fromarray(self.labels["img_2"], mode="L").convert("P")
        image.putpalette(voc_palette_bytes())
        image.save(path)
        with self.assertRaises(ValueError) as caught:
            load_pseudo_label_records(self.records, self.label_dir, "pl", "source")
        self.assertIn("img_2.png (mode P)", str(caught.exception))


@requires_detectron2
class PseudoLabelDatasetTest(unittest.TestCase):
    def setUp(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name
        self.records, self.labels = toy_records(self.root, [(40, 56), (33, 47)])
        self.label_dir = os.path.join(self.root, "pseudo")
        os.makedirs(self.label_dir)
        for image_id, label in self.labels.items():
            save_label_png(label, os.path.join(self.label_dir, image_id + ".png"))
        self.names = ["cdam_test_pl_source", "cdam_test_pl"]
        DatasetCatalog.register(self.names[0], lambda: [dict(r) for r in self.records])
        voc = MetadataCatalog.get("cdam_voc21_sem_seg_train_aug").as_dict()
        MetadataCatalog.get(self.names[0]).set(**{k: v for k, v in voc.items() if k != "name"})

    def tearDown(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for name in self.names:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        self._tmp.cleanup()

    def test_registration_metadata_and_idempotence(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        from cdam_d2.data.datasets import register_pseudo_label_dataset

        register_pseudo_label_dataset(self.names[1], self.label_dir, images_from=self.names[0])
        register_pseudo_label_dataset(self.names[1], self.label_dir, images_from=self.names[0])  # no-op
        meta, source = MetadataCatalog.get(self.names[1]), MetadataCatalog.get(self.names[0])
        for key in ("stuff_classes", "stuff_colors", "ignore_label", "class_names_file"):
            self.assertEqual(meta.get(key), source.get(key), key)
        self.assertEqual(meta.evaluator_type, "sem_seg")
        self.assertEqual(meta.sem_seg_root, self.label_dir)
        self.assertEqual(len(DatasetCatalog.get(self.names[1])), 2)
        with self.assertRaises(ValueError):
            register_pseudo_label_dataset(self.names[1], self.root, images_from=self.names[0])
        with self.assertRaises(KeyError):
            register_pseudo_label_dataset("cdam_test_pl_other", self.label_dir, images_from="no_such_dataset")

    def test_stock_dataset_mapper_reads_the_indices(self):
        from detectron2.config import get_cfg
        from detectron2.data import DatasetCatalog, DatasetMapper

        from cdam_d2.data.datasets import register_pseudo_label_dataset

        register_pseudo_label_dataset(self.names[1], self.label_dir, images_from=self.names[0])
        mapper = DatasetMapper(get_cfg(), is_train=True, augmentations=[])
        for record in DatasetCatalog.get(self.names[1]):
            sem_seg = mapper(record)["sem_seg"].numpy()
            np.testing.assert_array_equal(sem_seg, self.labels[record["image_id"]])

    def test_training_augmentation_crops_and_pads_with_ignore(self):
        from detectron2.data import DatasetCatalog, DatasetMapper

        from cdam_d2.second_stage.config import add_second_stage_config
        from cdam_d2.data.datasets import register_pseudo_label_dataset
        from cdam_d2.engine import load_cfg
        from cdam_d2.second_stage.recipe import build_train_augmentations

        register_pseudo_label_dataset(self.names[1], self.label_dir, images_from=self.names[0])
        cfg, _ = load_cfg(SECOND_STAGE_TOY_CONFIG, ["INPUT.MIN_SIZE_TRAIN", "(30, 30)", "MODEL.DEVICE", "cpu"],
                          add_config=add_second_stage_config)
        mapper = DatasetMapper(cfg, is_train=True, augmentations=build_train_augmentations(cfg))
        for record in DatasetCatalog.get(self.names[1]):
            out = mapper(record)
            self.assertEqual(tuple(out["image"].shape), (3, 64, 64))
            self.assertEqual(tuple(out["sem_seg"].shape), (64, 64))
            # the short side became 30 < 64: everything beyond the resized image is padding = ignore
            sem_seg = out["sem_seg"].numpy()
            self.assertTrue((sem_seg[30:] == 255).all())
            self.assertTrue(set(np.unique(sem_seg[:30])) <= set(range(21)) | {255})
            self.assertLess((sem_seg[:30, :30] == 255).mean(), 1.0)


if __name__ == "__main__":
    unittest.main()
