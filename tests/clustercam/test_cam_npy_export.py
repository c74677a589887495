"""tools/export_pseudo_labels.py --kind cam-npy: the releases' CAM dictionaries (image-level classes only,
multi-scale + flip CAMs at the image size, min-max normalised), scored like the ``--kind cam`` PNGs at
BG_THR, and resumable (complete files skipped, damaged ones written again)."""
import os
import runpy
import tempfile
import unittest

import numpy as np
import torch

from tests.helpers import CLUSTERCAM_TOY_CONFIG, REPO, RegisteredToyDatasets, requires_detectron2

DATASET = "cdam_voc21_sem_seg_train_aug"


@requires_detectron2
class CamNpyExportTest(RegisteredToyDatasets, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.data import DatasetCatalog
        from detectron2.modeling import build_model

        cls.tool = runpy.run_path(os.path.join(REPO, "tools", "export_pseudo_labels.py"))
        cls.out = tempfile.TemporaryDirectory()
        torch.manual_seed(0)
        weights = os.path.join(cls.out.name, "model.pth")
        args = cls.tool["parse_args"](["--config-file", CLUSTERCAM_TOY_CONFIG, "--dataset", DATASET, "--output", "x",
                                       "MODEL.DEVICE", "cpu"])
        cfg = cls.tool["setup_cfg"](args)
        cls.model = build_model(cfg).eval()
        DetectionCheckpointer(cls.model, cls.out.name).save("model")
        cfg.defrost()
        cfg.MODEL.WEIGHTS = weights
        cfg.freeze()
        cls.cfg = cfg
        cls.records = DatasetCatalog.get(DATASET)[:5]  # five images keep the test fast
        DatasetCatalog.register("cdam_test_cam_npy_subset", lambda: cls.records)
        cls.folders = {kind: os.path.join(cls.out.name, kind) for kind in ("cam-npy", "cam")}
        cls.counts = {kind: cls.tool["export"](cfg, "cdam_test_cam_npy_subset", folder, kind=kind)
                      for kind, folder in cls.folders.items()}

    @classmethod
    def tearDownClass(cls):
        from detectron2.data import DatasetCatalog

        DatasetCatalog.remove("cdam_test_cam_npy_subset")
        cls.out.cleanup()
        super().tearDownClass()

    def path(self, record, kind="cam-npy"):
        return os.path.join(self.folders[kind], record["image_id"] + (".npy" if kind == "cam-npy" else ".png"))

    def test_dictionaries_hold_the_image_classes_cams_at_image_size(self):
        from cdam_d2.clustercam.mapper import ClusterCAMDatasetMapper
        from cdam_d2.data.cam_io import read_cam_dict

        self.assertEqual(self.counts["cam-npy"], (5, 0))
        mapper = ClusterCAMDatasetMapper(self.cfg, is_train=False)
        for record in self.records:
            cams = np.load(self.path(record), allow_pickle=True).item()  # the releases' reader
            self.assertEqual(sorted(cams), sorted(label - 1 for label in record["image_labels"]))
            mapped = mapper(record)
            image = self.model.normalize(mapped["image"])[None]
            expected = self.model.class_activation_maps(image, self.model.multi_hot_labels([record]), train_mode=False)
            for key, cam in cams.items():
                self.assertEqual(cam.dtype, np.float32)
                self.assertEqual(cam.shape, (mapped["height"], mapped["width"]))
                np.testing.assert_allclose(cam, expected[0, key].numpy(), rtol=0, atol=1e-6)
                self.assertEqual(cam.min(), 0.0)  # min-max normalised per class
                self.assertTrue(0.0 < cam.max() < 1.0)  # m / (m + 1e-5) for the raw maximum m
            self.assertEqual(read_cam_dict(self.path(record)).keys(), cams.keys())

    def test_scored_at_bg_thr_like_the_cam_label_pngs(self):
        from detectron2.data import MetadataCatalog

        from cdam_d2.evaluation.prediction_folder import GroundTruth, folder_metrics, score_folder

        names = MetadataCatalog.get(DATASET).stuff_classes
        items = [GroundTruth(r["image_id"], r["sem_seg_file_name"]) for r in self.records]
        bg_thr = self.cfg.MODEL.CLUSTERCAM.PSEUDO_LABEL.BG_THR
        npy = score_folder(items, self.folders["cam-npy"], "npy", len(names), 255, [bg_thr], workers=1, progress=False)
        png = score_folder(items, self.folders["cam"], "png", len(names), 255, workers=1, progress=False)
        self.assertTrue(np.array_equal(npy.confusions, png.confusions))
        self.assertGreater(folder_metrics(png, names)["results"][0]["mIoU"], 0)

    def test_rerun_skips_complete_files_and_rewrites_damaged_ones(self):
        from cdam_d2.data.cam_io import read_cam_dict, save_cam_dict

        with tempfile.TemporaryDirectory() as folder:
            export = lambda: self.tool["export"](self.cfg, "cdam_test_cam_npy_subset", folder, kind="cam-npy")  # noqa
            self.assertEqual(export(), (5, 0))
            paths = [os.path.join(folder, r["image_id"] + ".npy") for r in self.records]
            good = read_cam_dict(paths[0])
            with open(paths[0], "rb+") as f:
                f.truncate(os.path.getsize(paths[0]) // 2)
            save_cam_dict({19: np.zeros((3, 3), np.float32)}, paths[1])  # loads, but not this image's classes
            kept = os.stat(paths[2]).st_ino
            self.assertEqual(export(), (2, 3))
            self.assertEqual(os.stat(paths[2]).st_ino, kept)
            again = read_cam_dict(paths[0])
            for key in good:
                np.testing.assert_array_equal(again[key], good[key])
            self.assertEqual(sorted(read_cam_dict(paths[1])),
                             sorted(label - 1 for label in self.records[1]["image_labels"]))
            self.assertFalse([name for name in os.listdir(folder) if name.endswith(".tmp")])


if __name__ == "__main__":
    unittest.main()
