"""``add_cdam_config``: the plugin's ``CDAM_D2`` keys and every method's ``MODEL.<METHOD>`` keys."""
import importlib

from .methods import METHODS

__all__ = ["add_cdam_config", "add_plugin_keys"]


def add_cdam_config(cfg):
    """Add ``CDAM_D2`` and the keys of every method (``MODEL.CDAM``, ``MODEL.CLUSTERCAM``) to a
    Detectron2 config, in place.

    Idempotent: a config that already has ``CDAM_D2`` is returned unchanged, so projects that
    combine several plugins may call it more than once. Call it before ``merge_from_file``.
    """
    if "CDAM_D2" in cfg:
        return cfg
    add_plugin_keys(cfg)
    for method in METHODS:
        importlib.import_module(f"{__package__}.{method}.config").add_config(cfg)
    return cfg


def add_plugin_keys(cfg):
    """``CDAM_D2``: plugin-level knobs shared by every method."""
    node = type(cfg)
    cfg.CDAM_D2 = node()
    cfg.CDAM_D2.EVALUATOR = node()
    # "detectron2": classes absent from the ground truth are left out of mIoU (Detectron2's rule).
    # "mmseg": such a class that is predicted counts as IoU 0 (MMSegmentation's rule).
    # "release": every class counts, one absent from prediction and ground truth as IoU 0 (the WSSS
    # releases' evaluation script). Any other value fails when the evaluator is built.
    cfg.CDAM_D2.EVALUATOR.CONVENTION = "detectron2"
    # Raise on a prediction/label size mismatch or an out-of-range label value instead of counting it.
    cfg.CDAM_D2.EVALUATOR.STRICT = True
    cfg.CDAM_D2.EVALUATOR.BOUNDARY_IOU = False
    cfg.CDAM_D2.EVALUATOR.WRITE_PREDICTIONS = False
    # DDP option for models with branches that are idle in some iterations (e.g. a decoder that
    # starts learning only after a warm-up phase).
    cfg.CDAM_D2.DDP_FIND_UNUSED_PARAMETERS = False
    # Load weight files that need full pickle (a .pkl or .pth holding Python objects besides
    # tensors and numpy arrays). Full pickle runs any code the file names: only for trusted files.
    cfg.CDAM_D2.ALLOW_PICKLED_WEIGHTS = False
