"""ClusterCAM optimiser groups and the epoch-wise LR schedule: base LR 5e-4 x batch / 512, 5 warm-up epochs
from 1e-6, then a cosine towards 1e-5 (above the base LR, so the LR still rises), stepped once per epoch."""
import unittest

import torch

from cdam_d2.clustercam.modeling import ClusterCAMNet
from cdam_d2.clustercam.solver import ClusterCAMEpochScheduler, clustercam_epoch_lr, clustercam_param_groups
from tests.helpers import requires_detectron2

VOC_LR = 5e-4 * 9 / 512
COCO_LR = 5e-4 * 6 / 512
# epoch -> (VOC lr, COCO lr) of the release's schedule (COCO's last epoch is 59).
TABLE = {0: (1.0e-6, 1.0e-6), 1: (1.0e-6, 1.0e-6), 2: (2.5578e-6, 1.9719e-6), 3: (4.1156e-6, 2.9438e-6),
         4: (5.6734e-6, 3.9156e-6), 5: (7.2313e-6, 4.8875e-6), 6: (8.8007e-6, 5.9299e-6),
         20: (8.9499e-6, 6.8021e-6), 40: (9.3708e-6, 8.8696e-6), 50: (9.6041e-6, 9.6660e-6)}


class TestEpochSchedule(unittest.TestCase):
    def test_table(self):
        self.assertAlmostEqual(VOC_LR, 8.7890625e-6)
        for epoch, (voc, coco) in TABLE.items():
            self.assertAlmostEqual(clustercam_epoch_lr(epoch, VOC_LR, 80) / voc, 1.0, delta=1e-4)
            self.assertAlmostEqual(clustercam_epoch_lr(epoch, COCO_LR, 60) / coco, 1.0, delta=1e-4)
        self.assertAlmostEqual(clustercam_epoch_lr(79, VOC_LR, 80) / 9.9981e-6, 1.0, delta=1e-4)
        self.assertAlmostEqual(clustercam_epoch_lr(59, COCO_LR, 60) / 9.9887e-6, 1.0, delta=1e-4)

    def test_piecewise_constant_in_iterations(self):
        scheduler = ClusterCAMEpochScheduler(VOC_LR, 80, 1175, 94000)
        for epoch in (0, 2, 6, 79):
            values = {scheduler(it / 94000) * VOC_LR for it in range(epoch * 1175, (epoch + 1) * 1175, 97)}
            self.assertEqual(len(values), 1, epoch)
            self.assertAlmostEqual(values.pop(), clustercam_epoch_lr(epoch, VOC_LR, 80))
        self.assertLess(scheduler(1174 / 94000), scheduler(2350 / 94000))
        with self.assertRaises(ValueError):
            ClusterCAMEpochScheduler(VOC_LR, 80, 0, 94000)


class TestParamGroups(unittest.TestCase):
    def test_weight_decay_split(self):
        net = ClusterCAMNet(3, embed_dim=16, depth=1, num_heads=2, cluster_depth=1, cam_last_layers=1,
                            decoder_dim=8)
        names = {id(p): n for n, p in net.named_parameters()}
        no_decay, decay = clustercam_param_groups(net, 0.05)
        self.assertEqual(decay["weight_decay"], 0.05)
        self.assertEqual(no_decay["weight_decay"], 0.0)
        decayed = {names[id(p)] for p in decay["params"]}
        exempt = {names[id(p)] for p in no_decay["params"]}
        self.assertEqual(decayed | exempt, set(names.values()))
        self.assertIn("pos_embed", decayed)
        self.assertIn("cls_token", decayed)
        self.assertIn("blocks.0.st_attn.mix_param", exempt)
        self.assertIn("head.bias", exempt)
        self.assertIn("decoder.conv8.weight", decayed)
        self.assertTrue(all(p.ndim > 1 for p in decay["params"]))
        _, decay = clustercam_param_groups(net, 0.05, decay_pos_and_cls=False)
        self.assertNotIn("pos_embed", {names[id(p)] for p in decay["params"]})


@requires_detectron2
class TestDetectron2Builders(unittest.TestCase):
    def test_optimizer_and_scheduler_from_config(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config
        from cdam_d2.clustercam.solver import build_clustercam_lr_scheduler, build_clustercam_optimizer

        cfg = get_cfg()
        add_cdam_config(cfg)
        cfg.SOLVER.BASE_LR = VOC_LR
        cfg.SOLVER.WEIGHT_DECAY = 0.05
        cfg.MODEL.CLUSTERCAM.SOLVER.ITERS_PER_EPOCH = 3
        cfg.SOLVER.MAX_ITER = 3 * 80
        model = torch.nn.Linear(4, 4)
        optimizer = build_clustercam_optimizer(cfg, model)
        self.assertIsInstance(optimizer, torch.optim.AdamW)
        scheduler = build_clustercam_lr_scheduler(cfg, optimizer)
        seen = []
        for _ in range(cfg.SOLVER.MAX_ITER):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        for epoch in (0, 1, 2, 6, 79):
            for it in range(3 * epoch, 3 * epoch + 3):
                self.assertAlmostEqual(seen[it], clustercam_epoch_lr(epoch, VOC_LR, 80), delta=1e-12)


if __name__ == "__main__":
    unittest.main()
