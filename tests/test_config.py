import glob
import os
import unittest

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

        from cdam_d2 import add_cdam_config
        from cdam_d2.config import add_second_stage_config

        paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
        self.assertTrue(paths)
        for path in paths:
            with self.subTest(config=os.path.relpath(path, REPO)):
                second_stage = os.path.basename(os.path.dirname(path)) == "second_stage"
                cfg = get_cfg()
                (add_second_stage_config if second_stage else add_cdam_config)(cfg)
                cfg.merge_from_file(path)
                expected = ("SemanticSegmentor",) if second_stage else ("CDAM", "ClusterCAM")
                self.assertIn(cfg.MODEL.META_ARCHITECTURE, expected)
                self.assertEqual(cfg.INPUT.FORMAT, "RGB")
                self.assertEqual(cfg.MODEL.DEVICE, "cuda")  # never pinned in YAML
                for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
                    self.assertTrue(name.startswith("cdam_"), name)


if __name__ == "__main__":
    unittest.main()
