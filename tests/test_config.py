"""Plugin config keys (cdam_d2.config) and every shipped YAML: each merges as plain data into the config of its
kind."""
import glob
import os
import unittest

from tests.helpers import CONFIGS, REPO, requires_detectron2


@requires_detectron2
class ConfigTest(unittest.TestCase):
    def test_add_cdam_config_is_idempotent(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        cfg = get_cfg()
        add_cdam_config(cfg)
        cfg.CDAM_D2.EVALUATOR.CONVENTION = "mmseg"
        add_cdam_config(cfg)  # a second call must not reset values
        self.assertEqual(cfg.CDAM_D2.EVALUATOR.CONVENTION, "mmseg")
        for key in ("CDAM", "CLUSTERCAM"):
            self.assertIn(key, cfg.MODEL)

    def test_every_yaml_merges(self):
        from detectron2.config import get_cfg
        from detectron2.data import DatasetCatalog

        from cdam_d2 import add_cdam_config
        from cdam_d2.second_stage.config import add_second_stage_config

        paths = sorted(glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True))
        self.assertTrue(paths)
        for path in paths:
            with self.subTest(config=os.path.relpath(path, REPO)):
                second_stage = os.path.basename(os.path.dirname(path)) == "second_stage"
                cfg = get_cfg()
                (add_second_stage_config if second_stage else add_cdam_config)(cfg)
                cfg.merge_from_file(path, allow_unsafe=False)  # shipped configs are plain data
                expected = ("SemanticSegmentor",) if second_stage else ("CDAM", "ClusterCAM")
                self.assertIn(cfg.MODEL.META_ARCHITECTURE, expected)
                self.assertEqual(cfg.INPUT.FORMAT, "RGB")
                self.assertEqual(cfg.MODEL.DEVICE, "cuda")  # never pinned in YAML
                for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
                    if name in DETECTRON2_BUILTIN:  # reused, not re-registered: it must be Detectron2's own
                        self.assertIn(name, DatasetCatalog.list())
                    else:
                        self.assertTrue(name.startswith("cdam_"), name)


# Detectron2's own registrations that CDAM configs evaluate on (cdam_d2 registers only cdam_* names).
DETECTRON2_BUILTIN = ("ade20k_sem_seg_val", "cityscapes_fine_sem_seg_val")


if __name__ == "__main__":
    unittest.main()
