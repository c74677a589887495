"""``Trainer``: Detectron2's ``DefaultTrainer`` that lets each meta-architecture bring its own recipe.

The Trainer knows no method by name. A meta-architecture class may define any of these classmethods
(:data:`RECIPE_METHODS`); those it does not define fall back to Detectron2's defaults:

- ``build_train_loader(cfg)`` and ``build_test_loader(cfg, dataset_name)``: its data mappers;
- ``build_optimizer(cfg, model)`` and ``build_lr_scheduler(cfg, optimizer)``: its solver;
- ``build_hooks(cfg, trainer, hooks) -> hooks``: adapts Detectron2's default hook list;
- ``evaluation_context(cfg, model)``: a context manager entered around each :meth:`Trainer.test`
  (``model`` unwrapped from DDP), for what an evaluation owns: worker pools, text embeddings, ...

So a third method declares its recipe next to its meta-architecture and touches no shared file.
"""
import contextlib
import os
import weakref

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..evaluation.sem_seg_evaluator import SemSegEvaluator
from .checkpoint import CoveringCheckpointer

RECIPE_METHODS = ("build_train_loader", "build_test_loader", "build_optimizer", "build_lr_scheduler",
                  "build_hooks", "evaluation_context")


def method_recipe(cfg, name):
    """The classmethod ``name`` of ``cfg.MODEL.META_ARCHITECTURE``'s class, or None if it has none."""
    assert name in RECIPE_METHODS, name
    return getattr(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), name, None)


def wrap_ddp(model, cfg):
    """DDP when there are several processes; CPU models take ``device_ids=None`` (gloo)."""
    if comm.get_world_size() == 1:
        return model
    on_cpu = torch.device(cfg.MODEL.DEVICE).type == "cpu"
    return DistributedDataParallel(
        model,
        device_ids=None if on_cpu else [comm.get_local_rank()],
        broadcast_buffers=False,
        find_unused_parameters=cfg.CDAM_D2.DDP_FIND_UNUSED_PARAMETERS,
    )


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__ with one change: DDP that also works for CPU models.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model, cfg)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = CoveringCheckpointer.from_cfg(model, cfg, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        hooks = super().build_hooks()
        adapt = method_recipe(self.cfg, "build_hooks")
        return adapt(self.cfg, self, hooks) if adapt else hooks

    @classmethod
    def evaluation_context(cls, cfg, model):
        """The method's ``evaluation_context`` for ``model`` (worker pools, ...), or a null context."""
        open_context = method_recipe(cfg, "evaluation_context")
        if open_context is None:
            return contextlib.nullcontext()
        return open_context(cfg, model.module if isinstance(model, DistributedDataParallel) else model)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        with cls.evaluation_context(cfg, model):
            return super().test(cfg, model, evaluators)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        # Cityscapes' builtin sem_seg splits read *_labelTrainIds.png: 19-class mIoU as sem_seg.
        if evaluator_type not in ("sem_seg", "cityscapes_sem_seg"):
            raise NotImplementedError(
                f"Dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; the cdam_d2 "
                "Trainer evaluates semantic segmentation datasets ('sem_seg', "
                "'cityscapes_sem_seg') only."
            )
        options = cfg.CDAM_D2.EVALUATOR
        return SemSegEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name),
            convention=options.CONVENTION,
            strict=options.STRICT,
            boundary_iou=options.BOUNDARY_IOU,
            write_predictions=options.WRITE_PREDICTIONS,
        )

    @classmethod
    def build_train_loader(cls, cfg):
        build = method_recipe(cfg, "build_train_loader")
        return build(cfg) if build else super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        build = method_recipe(cfg, "build_test_loader")
        return build(cfg, dataset_name) if build else super().build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        build = method_recipe(cfg, "build_optimizer")
        return build(cfg, model) if build else super().build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        build = method_recipe(cfg, "build_lr_scheduler")
        return build(cfg, optimizer) if build else super().build_lr_scheduler(cfg, optimizer)
