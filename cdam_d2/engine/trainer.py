"""``Trainer``: Detectron2's ``DefaultTrainer`` that takes every method-specific piece from a recipe.

The Trainer knows no method by name. Loaders, optimizer, LR schedule, hook adaptations, the context
of an evaluation and the loading of a new run's weights come from :attr:`Trainer.recipe`, by default
the recipe of ``cfg.MODEL.META_ARCHITECTURE`` (:func:`cdam_d2.engine.recipe.recipe_of`). An entry
point whose meta-architecture is not the plugin's (the second stage trains Detectron2's DeepLab)
subclasses the Trainer with ``recipe = ...``.
"""
import os
import weakref

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..evaluation.sem_seg_evaluator import SemSegEvaluator
from .checkpoint import CoveringCheckpointer
from .recipe import recipe_of


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
    #: A fixed :class:`~cdam_d2.engine.recipe.Recipe`, or None for the meta-architecture's.
    recipe = None

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

    @classmethod
    def recipe_for(cls, cfg):
        return cls.recipe or recipe_of(cfg)

    def build_hooks(self):
        return self.recipe_for(self.cfg).build_hooks(self.cfg, self, super().build_hooks())

    def resume_or_load(self, resume=True):
        """The run's last checkpoint when resuming, else ``MODEL.WEIGHTS`` as the recipe loads it."""
        if resume and self.checkpointer.has_checkpoint():
            return super().resume_or_load(resume=True)
        self.recipe_for(self.cfg).load_initial_weights(self.cfg, self.checkpointer)

    @classmethod
    def evaluation_context(cls, cfg, model):
        """The recipe's ``evaluation_context`` for ``model`` (unwrapped from DDP)."""
        return cls.recipe_for(cfg).evaluation_context(
            cfg, model.module if isinstance(model, DistributedDataParallel) else model)

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
        return cls.recipe_for(cfg).build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return cls.recipe_for(cfg).build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return cls.recipe_for(cfg).build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return cls.recipe_for(cfg).build_lr_scheduler(cfg, optimizer)
