"""CDAM's test mapper: the resize rule, and the dataset of its loader stamped on every record."""
import os
import tempfile
import unittest
import unittest.mock

import numpy as np
import torch

from tests.helpers import CDAM_TOY_CONFIG, requires_detectron2, toy_cfg


@requires_detectron2
class TestCDAMTestMapper(unittest.TestCase):
    def test_resize_rule(self):
        from PIL import Image

        from cdam_d2.cdam.mapper import CDAMTestMapper

        mapper = CDAMTestMapper(toy_cfg(CDAM_TOY_CONFIG, "INPUT.MIN_SIZE_TEST", "448", "INPUT.MAX_SIZE_TEST", "2048"))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "a.png")
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path)
            record = mapper({"file_name": path, "meta": {"dataset_name": "cdam_voc21_sem_seg_val"}})
        self.assertEqual(tuple(record["image"].shape), (3, 448, 597))
        self.assertEqual(record["image"].dtype, torch.uint8)
        self.assertEqual((record["height"], record["width"]), (375, 500))
        self.assertEqual(record["meta"], {"dataset_name": "cdam_voc21_sem_seg_val"})  # no dataset_name: kept

    def test_stamps_the_loaders_dataset(self):
        from PIL import Image

        from cdam_d2.cdam.mapper import CDAMTestMapper
        from cdam_d2.cdam.meta_arch import CDAM

        cfg = toy_cfg(CDAM_TOY_CONFIG)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "a.png")
            Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
            mapper = CDAMTestMapper(cfg, dataset_name="ade20k_sem_seg_val")
            self.assertEqual(mapper({"file_name": path})["meta"], {"dataset_name": "ade20k_sem_seg_val"})
            stale = {"file_name": path, "meta": {"dataset_name": "cdam_voc21_sem_seg_val", "other": 1}}
            self.assertEqual(mapper(stale)["meta"], {"dataset_name": "ade20k_sem_seg_val", "other": 1})
            self.assertEqual(stale["meta"]["dataset_name"], "cdam_voc21_sem_seg_val")  # input left alone
        with unittest.mock.patch("cdam_d2.cdam.recipe.build_detection_test_loader") as build_loader:
            CDAM.recipe.build_test_loader(cfg, "ade20k_sem_seg_val")
        self.assertEqual(build_loader.call_args.kwargs["mapper"].dataset_name, "ade20k_sem_seg_val")


if __name__ == "__main__":
    unittest.main()
