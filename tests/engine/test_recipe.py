"""The Trainer and the predictor take every method-specific piece from the method's recipe; the engine
knows no method; the package's layers import downwards only."""
import contextlib
import os
import re
import unittest

import torch
from torch import nn

from tests.helpers import CDAM_TOY_CONFIG, REPO, requires_detectron2


class FailingEvaluator:
    def reset(self):
        raise RuntimeError("evaluator failed")


@requires_detectron2
class TrainerRecipeTest(unittest.TestCase):
    def test_engine_names_no_method(self):
        from detectron2.modeling import META_ARCH_REGISTRY

        import cdam_d2

        engine = os.path.join(REPO, "cdam_d2", "engine")
        for name in sorted(os.listdir(engine)):
            if name.endswith(".py"):
                with open(os.path.join(engine, name)) as f:
                    source = f.read()
                self.assertIsNone(re.search(r"\bCDAM\b|clustercam|cdam\.|second_stage", source, re.IGNORECASE),
                                  name)
        for method in cdam_d2.METHODS:
            self.assertTrue(os.path.isdir(os.path.join(REPO, "cdam_d2", method)), method)
        self.assertIn("ClusterCAM", META_ARCH_REGISTRY)
        self.assertIn("CDAM", META_ARCH_REGISTRY)

    def test_layers_of_the_package(self):
        """Shared code imports no method; a method's algorithm folder imports neither Detectron2 nor
        the rest of its method (its Detectron2 adapters)."""
        import ast

        import cdam_d2

        def imports(folder):
            for root, _, files in os.walk(os.path.join(REPO, "cdam_d2", folder)):
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(root, name)
                        package = os.path.relpath(root, REPO).replace(os.sep, ".")
                        with open(path) as f:
                            tree = ast.parse(f.read())
                        for node in ast.walk(tree):
                            if isinstance(node, ast.ImportFrom):
                                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                                module = f"{base}.{node.module or ''}" if node.level else node.module
                                yield path, module
                            elif isinstance(node, ast.Import):
                                for alias in node.names:
                                    yield path, alias.name

        methods = tuple(f"cdam_d2.{m}" for m in (*cdam_d2.METHODS, "second_stage"))
        for shared in ("data", "evaluation", "engine", "utils", "layers"):
            for path, module in imports(shared):
                self.assertFalse(module.startswith(methods), f"{path} imports {module}")
        for method in cdam_d2.METHODS:
            for path, module in imports(os.path.join(method, "modeling")):
                self.assertFalse(module.startswith("detectron2"), f"{path} imports {module}")
                inside = module.startswith(f"cdam_d2.{method}.modeling") or not module.startswith(f"cdam_d2.{method}")
                self.assertTrue(inside, f"{path} imports {module}")

    def test_a_new_method_brings_its_own_recipe(self):
        from detectron2.modeling import META_ARCH_REGISTRY

        from cdam_d2.engine import Recipe, load_cfg
        from cdam_d2.engine.predictor import build_predictor
        from cdam_d2.engine.trainer import Trainer

        calls = []

        class ProbePredictor:
            def __init__(self, cfg, vocabulary, **kwargs):
                calls.append(("predictor", cfg.MODEL.META_ARCHITECTURE, vocabulary))

        class ProbeRecipe(Recipe):
            predictor = ProbePredictor

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

        class RecipeProbe(nn.Module):
            recipe = ProbeRecipe

        META_ARCH_REGISTRY.register(RecipeProbe)
        try:
            cfg = load_cfg(CDAM_TOY_CONFIG, ["MODEL.META_ARCHITECTURE", "RecipeProbe"])[0]
            optimizer = Trainer.build_optimizer(cfg, nn.Linear(1, 1))
            self.assertEqual(optimizer.param_groups[0]["lr"], 0.5)
            self.assertEqual(Trainer.build_test_loader(cfg, "some_split"), ["some_split"])
            # Not declared: Detectron2's default scheduler (WarmupMultiStepLR via LRMultiplier).
            scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
            self.assertTrue(hasattr(scheduler, "step"))
            # The evaluation context wraps Trainer.test, also when the test raises.
            with self.assertRaisesRegex(RuntimeError, "evaluator failed"):
                Trainer.test(cfg, nn.Identity(), evaluators=[FailingEvaluator()])
            self.assertIsInstance(build_predictor(cfg, "a; b"), ProbePredictor)
        finally:
            META_ARCH_REGISTRY._obj_map.pop("RecipeProbe")
        self.assertEqual(calls, ["optimizer", ("test_loader", "some_split"), "enter",
                                 ("test_loader", "cdam_voc21_sem_seg_val"), "exit",
                                 ("predictor", "RecipeProbe", "a; b")])

    def test_a_meta_architecture_without_recipe_trains_as_in_detectron2(self):
        from detectron2.engine import DefaultTrainer

        from cdam_d2.engine import Recipe, load_cfg, recipe_of
        from cdam_d2.engine.predictor import build_predictor

        cfg = load_cfg(CDAM_TOY_CONFIG, ["MODEL.META_ARCHITECTURE", "SemanticSegmentor"])[0]
        self.assertIs(recipe_of(cfg), Recipe)
        model = nn.Linear(2, 2)
        ours, theirs = Recipe.build_optimizer(cfg, model), DefaultTrainer.build_optimizer(cfg, model)
        self.assertEqual(type(ours), type(theirs))
        self.assertEqual(ours.defaults, theirs.defaults)
        with self.assertRaisesRegex(ValueError, "SemanticSegmentor.*no predictor"):
            build_predictor(cfg)

    def test_training_cdam_says_it_is_training_free(self):
        from cdam_d2.engine import load_cfg
        from cdam_d2.engine.trainer import Trainer

        cfg = load_cfg(CDAM_TOY_CONFIG, ["MODEL.DEVICE", "cpu"])[0]
        with self.assertRaisesRegex(ValueError, "training-free"):
            Trainer.build_optimizer(cfg, nn.Linear(1, 1))
        with self.assertRaisesRegex(ValueError, "training-free"):
            Trainer.build_train_loader(cfg)


if __name__ == "__main__":
    unittest.main()
