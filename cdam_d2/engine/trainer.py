"""``Trainer``: Detectron2's ``DefaultTrainer`` with the plugin's mappers, solver and evaluator.

Each meta-architecture brings its own data mappers and solver; they are imported lazily here so
that using one method never imports the other's dependencies.
"""
import os
import weakref

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..evaluation.sem_seg_evaluator import SemSegEvaluator
from .checkpoint import CoveringCheckpointer


def _meta_arch(cfg) -> str:
    return cfg.MODEL.META_ARCHITECTURE


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
        self.checkpointer = CoveringCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type != "sem_seg":
            raise NotImplementedError(
                f"Dataset '{dataset_name}' has evaluator_type {evaluator_type!r}; the cdam_d2 "
                "Trainer evaluates semantic segmentation datasets ('sem_seg') only."
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
        if _meta_arch(cfg) == "CDAM":
            raise ValueError("CDAM is training-free: run tools/train_net.py with --eval-only.")
        if _meta_arch(cfg) == "ClusterCAM":
            from ..data.mappers.clustercam_mapper import ClusterCAMDatasetMapper

            return build_detection_train_loader(cfg, mapper=ClusterCAMDatasetMapper(cfg, is_train=True))
        return super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if _meta_arch(cfg) == "CDAM":
            from ..data.mappers.cdam_test_mapper import CDAMTestMapper

            return build_detection_test_loader(cfg, dataset_name, mapper=CDAMTestMapper(cfg))
        if _meta_arch(cfg) == "ClusterCAM":
            from ..data.mappers.clustercam_mapper import ClusterCAMDatasetMapper

            # Several images per batch let the model run their dense CRFs in parallel workers.
            return build_detection_test_loader(
                cfg, dataset_name, mapper=ClusterCAMDatasetMapper(cfg, is_train=False),
                batch_size=cfg.MODEL.CLUSTERCAM.TEST.IMS_PER_BATCH,
            )
        return super().build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        if _meta_arch(cfg) == "ClusterCAM":
            from ..solver import build_clustercam_optimizer

            return build_clustercam_optimizer(cfg, model)
        return super().build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        if _meta_arch(cfg) == "ClusterCAM":
            from ..solver import build_clustercam_lr_scheduler

            return build_clustercam_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)
