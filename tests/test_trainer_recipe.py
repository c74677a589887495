"""The Trainer takes every method-specific piece from the meta-architecture, and knows no method."""
import contextlib
import os
import re
import unittest

import torch
from torch import nn

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "cdam_voc21_toy_eval.yaml")


class FailingEvaluator:
    def reset(self):
        raise RuntimeError("evaluator failed")


@requires_detectron2
class TrainerRecipeTest(unittest.TestCase):
    def test_trainer_source_names_no_method(self):
        from detectron2.modeling import META_ARCH_REGISTRY

        import cdam_d2  # noqa: F401  (registers CDAM and ClusterCAM)

        with open(os.path.join(REPO, "cdam_d2", "engine", "trainer.py")) as f:
            source = f.read()
        for name in ("CDAM", "ClusterCAM", "clustercam", "cdam_test_mapper"):
            self.assertIsNone(re.search(rf"\b{name}\b", source), name)
        self.assertIn("ClusterCAM", META_ARCH_REGISTRY)

    def test_data_never_imports_modeling(self):
        import ast

        data_root = os.path.join(REPO, "cdam_d2", "data")
        for folder, _, files in os.walk(data_root):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                with open(path) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom):
                        self.assertNotIn("modeling", node.module or "", path)
                    elif isinstance(node, ast.Import):
                        self.assertFalse(any("modeling" in a.name for a in node.names), path)

    def test_a_new_method_brings_its_own_recipe(self):
        from detectron2.modeling import META_ARCH_REGISTRY

        from cdam_d2.engine import load_cfg
        from cdam_d2.engine.trainer import Trainer

        calls = []

        class RecipeProbe(nn.Module):
            @classmethod
            def build_optimizer(cls, cfg, model):
                calls.append("optimizer")
                return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)

            @classmethod
            def build_test_loader(cls, cfg, dataset_name):
                calls.append(("test_loader", dataset_name))
                return [dataset_name]

            @classmethod
            @contextlib.contextmanager
            def evaluation_context(cls, cfg, model):
                calls.append("enter")
                try:
                    yield
                finally:
                    calls.append("exit")

        META_ARCH_REGISTRY.register(RecipeProbe)
        try:
            cfg = load_cfg(TOY_CONFIG, ["MODEL.META_ARCHITECTURE", "RecipeProbe"])[0]
            optimizer = Trainer.build_optimizer(cfg, nn.Linear(1, 1))
            self.assertEqual(optimizer.param_groups[0]["lr"], 0.5)
            self.assertEqual(Trainer.build_test_loader(cfg, "some_split"), ["some_split"])
            # Not declared: Detectron2's default scheduler (WarmupMultiStepLR via LRMultiplier).
            scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
            self.assertTrue(hasattr(scheduler, "step"))
            # The evaluation context wraps Trainer.test, also when the test raises.
            with self.assertRaisesRegex(RuntimeError, "evaluator failed"):
                Trainer.test(cfg, nn.Identity(), evaluators=[FailingEvaluator()])
        finally:
            META_ARCH_REGISTRY._obj_map.pop("RecipeProbe")
        self.assertEqual(calls, ["optimizer", ("test_loader", "some_split"), "enter",
                                 ("test_loader", "cdam_voc21_sem_seg_val"), "exit"])

    def test_training_cdam_says_it_is_training_free(self):
        from cdam_d2.engine import load_cfg
        from cdam_d2.engine.trainer import Trainer

        cfg = load_cfg(TOY_CONFIG, ["MODEL.DEVICE", "cpu"])[0]
        with self.assertRaisesRegex(ValueError, "training-free"):
            Trainer.build_optimizer(cfg, nn.Linear(1, 1))
        with self.assertRaisesRegex(ValueError, "training-free"):
            Trainer.build_train_loader(cfg)


if __name__ == "__main__":
    unittest.main()
