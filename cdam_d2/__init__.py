"""cdam_d2: CDAM and ClusterCAM for Detectron2.

With detectron2 installed, ``import cdam_d2`` registers the ``cdam_*`` datasets (under
``$DETECTRON2_DATASETS``) and the meta-architecture of every method (:data:`cdam_d2.methods.METHODS`).
Without it, the algorithm modules, dataset readers and metrics still import and work.
"""
import importlib
import importlib.util

from .config import add_cdam_config
from .methods import METHODS

__version__ = "0.1.0"
__all__ = ["add_cdam_config", "__version__"]

# Public names loaded on first use: the predictors import Detectron2's engine.
LAZY_NAMES = {
    "CDAMPredictor": "cdam.predictor",
    "ClusterCAMPredictor": "clustercam.predictor",
    "SegmentationPrediction": "engine.predictor",
    "build_predictor": "engine.predictor",
}

if importlib.util.find_spec("detectron2") is not None:
    from .data.datasets.register import register_all_cdam_datasets

    for _method in METHODS:
        importlib.import_module(f".{_method}.meta_arch", __name__)  # registers the meta-architecture
    register_all_cdam_datasets()
    __all__ += ["register_all_cdam_datasets", *LAZY_NAMES]


def __getattr__(name):
    if name in LAZY_NAMES:
        return getattr(importlib.import_module(f".{LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
