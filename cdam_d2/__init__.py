"""cdam_d2: CDAM and ClusterCAM for Detectron2.

With detectron2 installed, ``import cdam_d2`` registers the ``cdam_*`` datasets (under
``$DETECTRON2_DATASETS``) and the ``CDAM`` and ``ClusterCAM`` meta-architectures. Without it, the
algorithm modules, dataset readers and metrics still import and work.
"""
import importlib.util

from .config import add_cdam_config

__version__ = "0.1.0"
__all__ = ["add_cdam_config", "__version__"]

if importlib.util.find_spec("detectron2") is not None:
    from .data.datasets.register import register_all_cdam_datasets
    from .modeling import meta_arch  # noqa: F401  (registers CDAM and ClusterCAM)

    register_all_cdam_datasets()
    __all__ += ["register_all_cdam_datasets", "CDAMPredictor", "ClusterCAMPredictor", "build_predictor"]

PREDICTOR_NAMES = ("CDAMPredictor", "ClusterCAMPredictor", "build_predictor")


def __getattr__(name):
    # The predictors import Detectron2's engine; load them on first use, not on `import cdam_d2`.
    if name in PREDICTOR_NAMES:
        from .engine import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
