"""ClusterCAM optimiser and LR schedule builders (called by the Trainer)."""
import logging

import torch

from .schedule import ClusterCAMEpochScheduler, clustercam_epoch_lr

logger = logging.getLogger(__name__)

__all__ = [
    "build_clustercam_optimizer",
    "build_clustercam_lr_scheduler",
    "clustercam_param_groups",
    "ClusterCAMEpochScheduler",
    "clustercam_epoch_lr",
]


def clustercam_param_groups(model, weight_decay, decay_pos_and_cls=True):
    """timm ``add_weight_decay`` split: no decay for 1-D tensors and biases; decay for the rest.

    ``pos_embed`` and ``cls_token`` are decayed unless ``decay_pos_and_cls`` is False (the release
    decays them because its DataParallel wrapper hid the model's ``no_weight_decay`` exemption list from timm).
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name.endswith(".bias")
        if not decay_pos_and_cls and name.endswith(("pos_embed", "cls_token")):
            exempt = True
        (no_decay if exempt else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_clustercam_optimizer(cfg, model):
    """AdamW over ``clustercam_param_groups``, lr = SOLVER.BASE_LR, wd = SOLVER.WEIGHT_DECAY, no clipping."""
    solver = cfg.MODEL.CLUSTERCAM.SOLVER
    groups = clustercam_param_groups(model, cfg.SOLVER.WEIGHT_DECAY, solver.WD_ON_POS_CLS)
    return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(solver.BETAS), eps=solver.EPS)


def check_epoch_schedule(cfg):
    """The release counts epochs; here they are iterations, so the two must agree.

    Raises if ``SOLVER.MAX_ITER`` runs past ``EPOCHS * ITERS_PER_EPOCH`` (the schedule would end
    first) and warns if it stops earlier. Warns when ``ITERS_PER_EPOCH`` is not
    ``len(train set) // IMS_PER_BATCH`` (e.g. after changing the batch size), since the LR
    schedule and the segmentation-phase start (``LOSS.SEG_START_ITER``) are counted in it.
    """
    from detectron2.data import DatasetCatalog

    solver = cfg.MODEL.CLUSTERCAM.SOLVER
    scheduled = solver.EPOCHS * solver.ITERS_PER_EPOCH
    if cfg.SOLVER.MAX_ITER > scheduled:
        raise ValueError(
            f"SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER} runs past MODEL.CLUSTERCAM.SOLVER.EPOCHS x "
            f"ITERS_PER_EPOCH = {solver.EPOCHS} x {solver.ITERS_PER_EPOCH} = {scheduled}; set MAX_ITER to "
            "their product (and keep LOSS.SEG_START_ITER in the same iteration units).")
    if cfg.SOLVER.MAX_ITER < scheduled:
        logger.warning(f"SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER} stops before the {scheduled} iterations of "
                       f"the {solver.EPOCHS}-epoch schedule.")
    num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
    expected = num_images // cfg.SOLVER.IMS_PER_BATCH
    if expected != solver.ITERS_PER_EPOCH:
        logger.warning(
            f"MODEL.CLUSTERCAM.SOLVER.ITERS_PER_EPOCH={solver.ITERS_PER_EPOCH} but {num_images} training "
            f"images / SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} = {expected}: the epoch-wise LR and "
            "LOSS.SEG_START_ITER follow ITERS_PER_EPOCH, not the data.")


def build_clustercam_lr_scheduler(cfg, optimizer):
    """Detectron2 ``LRMultiplier`` following the release's per-epoch LR (see ``clustercam_epoch_lr``)."""
    from detectron2.solver import LRMultiplier

    solver = cfg.MODEL.CLUSTERCAM.SOLVER
    check_epoch_schedule(cfg)
    multiplier = ClusterCAMEpochScheduler(
        cfg.SOLVER.BASE_LR, solver.EPOCHS, solver.ITERS_PER_EPOCH, cfg.SOLVER.MAX_ITER,
        solver.WARMUP_EPOCHS, solver.WARMUP_LR, solver.MIN_LR)
    return LRMultiplier(optimizer, multiplier, cfg.SOLVER.MAX_ITER)
