"""ClusterCAM through Detectron2: configs, build_model, a train step, inference, the mapper."""
import os
import tempfile
import unittest

import torch

from tests.helpers import CLUSTERCAM_TOY_CONFIG, CONFIGS, requires_detectron2, toy_cfg


def training_batch(batch=2, size=64):
    torch.manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8), "height": size, "width": size,
             "file_name": f"img{i}.jpg", "image_labels": [1 + i, 15]} for i in range(batch)]


@requires_detectron2
class TestClusterCAMDetectron2(unittest.TestCase):
    def test_configs_merge(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        for name in ("Base-ClusterCAM.yaml", "clustercam_voc.yaml", "clustercam_coco.yaml"):
            cfg = get_cfg()
            add_cdam_config(cfg)
            cfg.merge_from_file(os.path.join(CONFIGS, name))
            self.assertEqual(cfg.MODEL.META_ARCHITECTURE, "ClusterCAM")
        self.assertEqual(cfg.MODEL.CLUSTERCAM.NUM_CLASSES, 80)
        self.assertEqual(cfg.MODEL.CLUSTERCAM.LOSS.SEG_START_ITER, 40 * 13680)
        self.assertFalse(cfg.MODEL.CLUSTERCAM.TEST.CRF.ENABLED)

    def test_train_step(self):
        from detectron2.modeling import build_model
        from detectron2.utils.events import EventStorage

        model = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG))
        model.train()
        for start_iter, expected in [(0, {"loss_cls", "loss_pat", "loss_seg"}), (100, {"loss_cls", "loss_pat"})]:
            model.seg_start_iter = start_iter
            model.zero_grad()
            with EventStorage(5) as storage:
                losses = model(training_batch())
                self.assertEqual(set(losses), expected)
                total = sum(losses.values())
                self.assertTrue(bool(torch.isfinite(total)))
                total.backward()
                if "loss_seg" in expected:
                    self.assertIn("clustercam/pseudo_ignore", storage.latest())
                self.assertIn("clustercam/alpha_1", storage.latest())
            grads = {n: p.grad for n, p in model.named_parameters()}
            self.assertGreater(grads["net.blocks.0.st_attn.mix_param"].abs().item(), 0)
            self.assertGreater(grads["net.head.weight"].abs().sum().item(), 0)
            decoder_grad = grads["net.decoder.conv8.weight"]
            if "loss_seg" in expected:
                self.assertGreater(decoder_grad.abs().sum().item(), 0)
            else:
                self.assertIsNone(decoder_grad)

    def test_schedule_longer_than_epochs_is_rejected(self):
        from cdam_d2.clustercam.solver import build_clustercam_lr_scheduler

        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "SOLVER.MAX_ITER", "7")  # toy schedule: 3 epochs x 2 iterations
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        with self.assertRaisesRegex(ValueError, r"MAX_ITER=7 runs past .* 3 x 2 = 6"):
            build_clustercam_lr_scheduler(cfg, optimizer)

    def test_bad_labels(self):
        from detectron2.modeling import build_model
        from detectron2.utils.events import EventStorage

        model = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG))
        batch = training_batch()
        batch[0]["image_labels"] = [21]
        with EventStorage(0), self.assertRaisesRegex(ValueError, "NUM_CLASSES"):
            model(batch)

    def test_inference_output(self):
        from detectron2.modeling import build_model

        for crf in ("False", "True"):
            model = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", crf,
                                        "MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "1")).eval()
            inputs = [{"image": torch.randint(0, 256, (3, 53, 75), dtype=torch.uint8), "height": 53, "width": 75},
                      {"image": torch.randint(0, 256, (3, 64, 48), dtype=torch.uint8), "height": 128, "width": 96}]
            with torch.no_grad():
                outputs = model(inputs)
            self.assertEqual(tuple(outputs[0]["sem_seg"].shape), (21, 53, 75))
            self.assertEqual(tuple(outputs[1]["sem_seg"].shape), (21, 128, 96))
            for output in outputs:
                self.assertTrue(bool(torch.isfinite(output["sem_seg"]).all()))
                self.assertTrue(bool((output["sem_seg"] >= 0).all() and (output["sem_seg"] <= 1 + 1e-6).all()))

    def test_mapper(self):
        import numpy as np
        from PIL import Image

        from cdam_d2.clustercam.mapper import ClusterCAMDatasetMapper

        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.jpg")
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(path)
            record = {"file_name": path, "image_labels": [3], "meta": {"dataset_name": "x"}}
            train = ClusterCAMDatasetMapper(cfg, is_train=True)(record)
            self.assertEqual(tuple(train["image"].shape), (3, 64, 64))
            self.assertEqual(train["image"].dtype, torch.uint8)
            self.assertEqual((train["height"], train["width"]), (70, 90))
            self.assertEqual(train["image_labels"], [3])
            test = ClusterCAMDatasetMapper(cfg, is_train=False)(record)
            self.assertEqual(tuple(test["image"].shape), (3, 70, 90))
            with self.assertRaisesRegex(KeyError, "image_labels"):
                ClusterCAMDatasetMapper(cfg, is_train=True)({"file_name": path})


if __name__ == "__main__":
    unittest.main()
