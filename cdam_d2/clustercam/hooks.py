"""ClusterCAM's training hooks, installed by ``ClusterCAMRecipe.build_hooks``.

- In-training evaluation as in the release, which evaluated after every epoch and picked its reported
  checkpoint among those of the segmentation phase on val: once per epoch, but only after the decoder has
  started learning (``LOSS.SEG_START_ITER``), with the release's in-training protocol (one scale, no CRF;
  ``MODEL.CLUSTERCAM.TEST.IN_TRAINING``). After training, one final evaluation
  with the full test protocol (``TEST.SCALES``, ``TEST.CRF``), logged under ``final/``.
- ``model_best.pth`` (weights only) by in-training mIoU, with ``model_best.json`` saying which
  iteration and score; it survives ``--resume``.
- A finished run always leaves a loadable ``model_final.pth``, even when ``--resume`` found the
  run killed after its last periodic checkpoint and had nothing left to train.
- Each in-training evaluation also scores the pseudo-labels and CAM seeds of a training subset
  (``pseudo_label/*``, ``cam_seed/*`` next to ``sem_seg/*``) and stores the panel of one training
  image (:mod:`cdam_d2.clustercam.quality`).
"""
import json
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks as d2_hooks
from detectron2.utils import comm

from ..utils.files import save_json, write_atomically
from .quality import PANEL_NAME, TrainingMapsMonitor, unwrap_model

__all__ = ["EvaluationSchedule", "clustercam_hooks"]

logger = logging.getLogger(__name__)

BEST_WEIGHTS = "model_best.pth"
BEST_RECORD = "model_best.json"
FINAL_WEIGHTS = "model_final.pth"
METRIC = "sem_seg/mIoU"


class EvaluationSchedule:
    """In-training evaluations run after ``next_iter`` completed iterations when ``next_iter > start``
    and ``next_iter - start`` is a multiple of ``period``, and after the last iteration (so the
    last model competes for the best checkpoint). ``period`` 0: never."""

    def __init__(self, start, period, max_iter):
        self.start, self.period, self.max_iter = start, period, max_iter

    @classmethod
    def from_cfg(cls, cfg):
        cc = cfg.MODEL.CLUSTERCAM
        in_training = cc.TEST.IN_TRAINING
        start = cc.LOSS.SEG_START_ITER if in_training.START_ITER < 0 else in_training.START_ITER
        period = cfg.TEST.EVAL_PERIOD or in_training.PERIOD_EPOCHS * cc.SOLVER.ITERS_PER_EPOCH
        return cls(start, period, cfg.SOLVER.MAX_ITER)

    def due(self, next_iter):
        if self.period <= 0 or next_iter <= self.start:
            return False
        return (next_iter - self.start) % self.period == 0 or next_iter == self.max_iter

    def __repr__(self):
        if self.period <= 0:
            return "no in-training evaluation"
        return (f"in-training evaluation every {self.period} iterations after iteration {self.start} "
                f"and after the last ({self.max_iter})")


def in_training_cfg(cfg):
    """``cfg`` with the test protocol replaced by ``MODEL.CLUSTERCAM.TEST.IN_TRAINING``'s."""
    cfg = cfg.clone()
    cfg.defrost()
    test = cfg.MODEL.CLUSTERCAM.TEST
    test.SCALES = tuple(test.IN_TRAINING.SCALES)
    test.CRF.ENABLED = test.IN_TRAINING.CRF
    cfg.freeze()
    return cfg


def describe_protocol(cfg):
    test = cfg.MODEL.CLUSTERCAM.TEST
    return f"scales {tuple(test.SCALES)}, CRF {'on' if test.CRF.ENABLED else 'off'}"


class ScheduledEvalHook(d2_hooks.EvalHook):
    """Detectron2's ``EvalHook`` on an ``EvaluationSchedule``, plus a final evaluation under another
    protocol whose results go to the storage under ``final/`` and become the run's results."""

    def __init__(self, schedule, evaluate_in_training, evaluate_final, request_write=None):
        super().__init__(0, evaluate_in_training)
        self._schedule = schedule
        self._evaluate_final = evaluate_final
        self._request_write = request_write

    def after_step(self):
        if self._schedule.due(self.trainer.iter + 1):
            self._do_eval()
            if self._request_write is not None:
                self._request_write()  # every evaluation gets its own record in metrics.json

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:  # Detectron2's test for a finished run
            self._func = self._evaluate_final
            self._do_eval()
        del self._func, self._evaluate_final


class ModelOnlyCheckpointer(DetectionCheckpointer):
    """Saves the model weights alone, atomically, without moving ``last_checkpoint`` (so ``--resume``
    keeps resuming from the trainer's full checkpoints)."""

    def save(self, name, **kwargs):
        path = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info(f"Saving weights to {path}")
        write_atomically(path, lambda temporary: torch.save({"model": self.model.state_dict(), **kwargs}, temporary))


class BestMIoUCheckpointer(d2_hooks.BestCheckpointer):
    """Detectron2's ``BestCheckpointer`` on the evaluation schedule: ``model_best.pth`` (weights
    only) holds the model with the highest in-training mIoU so far, ``model_best.json`` its iteration
    and score. On ``--resume`` the record is read back, so a resumed run keeps the earlier best."""

    def __init__(self, schedule, checkpointer, protocol):
        super().__init__(0, checkpointer, METRIC, mode="max", file_prefix=BEST_WEIGHTS[:-len(".pth")])
        self._schedule = schedule
        self._protocol = protocol
        self._record_path = os.path.join(checkpointer.save_dir, BEST_RECORD)

    def before_train(self):
        if self.trainer.start_iter == 0 or not os.path.isfile(self._record_path):
            return
        with open(self._record_path) as f:
            record = json.load(f)
        if record.get("metric") == METRIC and os.path.isfile(os.path.join(self._checkpointer.save_dir, BEST_WEIGHTS)):
            self.best_metric, self.best_iter = record["value"], record["iteration"]
            self._logger.info(f"Resumed best checkpoint: {METRIC} {self.best_metric:.4f} at iteration {self.best_iter}")

    def after_step(self):
        if not self._schedule.due(self.trainer.iter + 1):
            return
        previous = (self.best_metric, self.best_iter)
        self._best_checking()
        if (self.best_metric, self.best_iter) != previous:
            save_json({"weights": BEST_WEIGHTS, "metric": METRIC, "value": self.best_metric,
                       "iteration": self.best_iter, "protocol": self._protocol},
                      self._record_path, indent=2, sort_keys=False)

    def after_train(self):
        if self.trainer.iter < self.trainer.max_iter:
            return
        final = getattr(self.trainer, "_last_eval_results", None) or {}
        final_miou = final.get("sem_seg", {}).get("mIoU")
        last = f"last: {FINAL_WEIGHTS}" + (f" (final-protocol mIoU {final_miou:.4f})" if final_miou is not None else "")
        if self.best_iter is None:
            best = "best: none (no in-training evaluation ran)"
        else:
            best = (f"best: {BEST_WEIGHTS} (iteration {self.best_iter}, in-training mIoU {self.best_metric:.4f} "
                    f"with {self._protocol})")
        self._logger.info(f"ClusterCAM checkpoints in {self._checkpointer.save_dir}: {last}; {best}. "
                          "Evaluate either with --eval-only MODEL.WEIGHTS <file>.")


def checkpoint_problem(path):
    """None if ``path`` is a checkpoint with model weights that ``torch.load`` reads, else what is wrong."""
    if not os.path.isfile(path):
        return "is missing"
    try:
        # mmap: only the archive index and the pickled structure are read, not the tensors.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        return f"cannot be loaded ({type(exc).__name__}: {exc})"
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        return "holds no model weights"
    return None


class FinalModelHook(d2_hooks.HookBase):
    """After a finished run, ``model_final.pth`` must load; if not, it is written from the model.

    Detectron2 writes it in the last iteration's ``after_step``. A run killed while writing it leaves
    it truncated with ``last_checkpoint`` at the last iteration's checkpoint, and ``--resume`` then
    has nothing to train: no step runs, so nothing rewrites it. The model in memory is the final one.
    """

    def __init__(self, checkpointer):
        self._checkpointer = checkpointer

    def after_train(self):
        trainer = self.trainer
        if trainer.iter < trainer.max_iter:  # the run failed or stopped early: there is no final model
            return
        path = os.path.join(self._checkpointer.save_dir, FINAL_WEIGHTS)
        problem = checkpoint_problem(path)
        if problem is None:
            return
        logger.warning(f"{path} {problem}; training is complete, so it is written again from the trained model.")
        finished_iter = trainer.iter
        trainer.iter = trainer.max_iter - 1  # the trainer state Detectron2 stores in model_final
        try:
            self._checkpointer.save(FINAL_WEIGHTS[:-len(".pth")], iteration=trainer.max_iter - 1)
        finally:
            trainer.iter = finished_iter
        problem = checkpoint_problem(path)
        if problem is not None:
            raise RuntimeError(f"{path} {problem} even after writing it again; check the disk (space, permissions).")


class WriterAfterEvaluations(d2_hooks.PeriodicWriter):
    """Detectron2's ``PeriodicWriter`` that also writes in a step after which an evaluation ran, so
    each evaluation gets its own record (once per step: Detectron2's printer divides by the steps
    between two writes)."""

    def __init__(self, writers, period):
        super().__init__(writers, period)
        self._write_requested = False

    def request_write(self):
        self._write_requested = True

    def after_step(self):
        due = (self.trainer.iter + 1) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1
        if due or self._write_requested:
            for writer in self._writers:
                writer.write()
        self._write_requested = False


def clustercam_hooks(cfg, trainer, hooks):
    """Detectron2's default hooks with its ``EvalHook`` replaced by ClusterCAM's schedule, plus the
    best and final checkpoint hooks (main process). Returns the new list."""
    schedule = EvaluationSchedule.from_cfg(cfg)
    in_training = in_training_cfg(cfg)
    logger.info(f"ClusterCAM: {schedule} ({describe_protocol(in_training)}); final evaluation with "
                f"{describe_protocol(cfg)}")

    monitor = TrainingMapsMonitor(cfg)

    def evaluate_in_training():
        results = trainer.test(in_training, trainer.model)
        if monitor.enabled:
            # The panel's prediction: the in-training scales, without a CRF.
            with unwrap_model(trainer.model).test_protocol(in_training.MODEL.CLUSTERCAM.TEST.SCALES):
                results.update(monitor.scores(trainer.model))
                panel = monitor.panel(trainer.model) if comm.is_main_process() else None
            if panel is not None:
                trainer.storage.put_image(PANEL_NAME, panel)
        return results

    def evaluate_final():
        trainer._last_eval_results = trainer.test(cfg, trainer.model)  # what DefaultTrainer.train returns
        return {"final": trainer._last_eval_results}

    result = []
    writer = None
    for hook in hooks:
        if isinstance(hook, d2_hooks.PeriodicWriter):
            writer = WriterAfterEvaluations(hook._writers, hook._period)
            hook = writer
        result.append(hook)
    eval_hook = ScheduledEvalHook(schedule, evaluate_in_training, evaluate_final,
                                  request_write=writer.request_write if writer else None)
    extra = []
    if comm.is_main_process():
        extra.append(BestMIoUCheckpointer(schedule, ModelOnlyCheckpointer(trainer.model, cfg.OUTPUT_DIR),
                                          describe_protocol(in_training)))
    for index, hook in enumerate(result):
        if isinstance(hook, d2_hooks.EvalHook):
            result[index:index + 1] = [eval_hook, *extra]
            break
    else:
        raise RuntimeError("Detectron2's default hooks have no EvalHook to replace")
    for index, hook in enumerate(result):
        if isinstance(hook, d2_hooks.PeriodicCheckpointer):
            result.insert(index + 1, FinalModelHook(trainer.checkpointer))
            break
    return result
