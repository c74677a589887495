"""A method's recipe: what it brings to Detectron2's training and inference loop.

The engine knows no method by name. A meta-architecture names its recipe in a class attribute
``recipe``; :class:`cdam_d2.engine.Trainer` and :func:`cdam_d2.engine.build_predictor` find it
through ``cfg.MODEL.META_ARCHITECTURE``. Every classmethod a recipe does not override is
Detectron2's default, so a meta-architecture without a recipe (Detectron2's own) trains as under
``DefaultTrainer``.
"""
import contextlib

from detectron2.engine import DefaultTrainer
from detectron2.modeling import META_ARCH_REGISTRY

__all__ = ["Recipe", "recipe_of"]


class Recipe:
    """Detectron2's defaults; a method subclasses this and overrides what it needs."""

    #: The method's :class:`cdam_d2.engine.predictor.SegmentationPredictor` subclass (None: no predictor).
    predictor = None

    @classmethod
    def load_initial_weights(cls, cfg, checkpointer):
        """Load a new run's ``MODEL.WEIGHTS`` with the trainer's ``checkpointer`` (a
        :class:`~cdam_d2.engine.checkpoint.CoveringCheckpointer`); a resumed run reads its own last
        checkpoint instead."""
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)

    @classmethod
    def build_train_loader(cls, cfg):
        return DefaultTrainer.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return DefaultTrainer.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return DefaultTrainer.build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return DefaultTrainer.build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_hooks(cls, cfg, trainer, hooks):
        """Adapt Detectron2's default hook list (``DefaultTrainer.build_hooks``); returns the new list."""
        return hooks

    @classmethod
    def evaluation_context(cls, cfg, model):
        """A context manager entered around each ``Trainer.test`` (``model`` unwrapped from DDP), for what
        an evaluation owns: worker pools, text embeddings, an inference protocol, ..."""
        return contextlib.nullcontext()


def recipe_of(cfg):
    """The recipe of ``cfg.MODEL.META_ARCHITECTURE`` (its class attribute ``recipe``), else :class:`Recipe`."""
    return getattr(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), "recipe", None) or Recipe
