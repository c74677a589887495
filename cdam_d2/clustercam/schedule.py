"""The release's epoch-wise LR (timm CosineLRScheduler stepped once per epoch), in iterations."""
import math

from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["clustercam_epoch_lr", "ClusterCAMEpochScheduler"]


def clustercam_epoch_lr(epoch, base_lr, epochs, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5):
    """LR used during ``epoch`` (0-based).

    Epoch 0 runs at ``warmup_lr``; epoch e >= 1 at g(e - 1) (one-epoch lag of ``step(epoch)`` after
    each epoch), with g linear warmup from ``warmup_lr`` to ``base_lr`` over ``warmup_epochs`` and then
    ``min_lr + ½(base_lr - min_lr)(1 + cos(π t / epochs))``. Since the release has
    ``min_lr > base_lr``, the "decay" rises slightly; replicated on purpose.
    """
    if epoch == 0:
        return warmup_lr
    t = epoch - 1
    if t < warmup_epochs:
        return warmup_lr + t * (base_lr - warmup_lr) / warmup_epochs
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t / epochs))


class ClusterCAMEpochScheduler(ParamScheduler):
    """fvcore multiplier for ``LRMultiplier``: value(where) = lr(epoch) / base_lr, with
    epoch = iteration // iters_per_epoch and iteration = round(where * max_iter)."""

    def __init__(self, base_lr, epochs, iters_per_epoch, max_iter, warmup_epochs=5, warmup_lr=1e-6,
                 min_lr=1e-5):
        if base_lr <= 0 or iters_per_epoch <= 0 or max_iter <= 0:
            raise ValueError(f"ClusterCAM schedule needs positive BASE_LR, ITERS_PER_EPOCH and MAX_ITER; got "
                             f"{base_lr}, {iters_per_epoch}, {max_iter}")
        self.base_lr = base_lr
        self.epochs = epochs
        self.iters_per_epoch = iters_per_epoch
        self.max_iter = max_iter
        self.warmup_epochs = warmup_epochs
        self.warmup_lr = warmup_lr
        self.min_lr = min_lr

    def lr_at_iteration(self, iteration):
        epoch = iteration // self.iters_per_epoch
        return clustercam_epoch_lr(epoch, self.base_lr, self.epochs, self.warmup_epochs,
                                   self.warmup_lr, self.min_lr)

    def __call__(self, where):
        return self.lr_at_iteration(int(round(where * self.max_iter))) / self.base_lr
