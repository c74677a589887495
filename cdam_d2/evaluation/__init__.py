"""Semantic segmentation metrics; the Detectron2 evaluator is imported lazily (needs detectron2)."""
from .metrics import confusion_matrix, segmentation_metrics

__all__ = ["SemSegEvaluator", "confusion_matrix", "segmentation_metrics"]


def __getattr__(name):
    if name == "SemSegEvaluator":
        from .sem_seg_evaluator import SemSegEvaluator

        return SemSegEvaluator
    raise AttributeError(name)
