"""``setup`` and ``main`` of ``tools/train_second_stage.py``: ``tools/train_net.py`` with the second
stage's config keys and recipe.

- the config gets DeepLab's keys and ``CDAM_D2.PSEUDO_LABELS`` (:func:`add_second_stage_config`);
- :func:`setup` registers the pseudo-label dataset named by the config in every process (``launch``
  spawns workers that run ``main`` and thus ``setup``, so a registration made only in the parent
  would be missing there).
"""
from ..data.datasets.pseudo_labels import export_command, register_pseudo_label_dataset
from ..engine import cli
from .config import add_second_stage_config
from .recipe import SecondStageTrainer

__all__ = ["main", "register_pseudo_labels_from_cfg", "setup"]


def register_pseudo_labels_from_cfg(cfg, training=True):
    """Register ``CDAM_D2.PSEUDO_LABELS.NAME`` from ``.DIR`` and ``.IMAGES_FROM`` when DIR is set.

    For training, DATASETS.TRAIN listing that name without a DIR raises an error saying which key to
    set; evaluation alone needs no pseudo-labels.
    """
    pseudo_labels = cfg.CDAM_D2.PSEUDO_LABELS
    if pseudo_labels.DIR:
        register_pseudo_label_dataset(pseudo_labels.NAME, pseudo_labels.DIR,
                                      images_from=pseudo_labels.IMAGES_FROM)
    elif training and pseudo_labels.NAME in cfg.DATASETS.TRAIN:
        raise ValueError(
            f"DATASETS.TRAIN uses the pseudo-label dataset '{pseudo_labels.NAME}' but CDAM_D2.PSEUDO_LABELS.DIR "
            "is empty: set it to the folder written by\n  "
            f"{export_command(pseudo_labels.IMAGES_FROM, '<DIR>')}\n(e.g. append `CDAM_D2.PSEUDO_LABELS.DIR <DIR>`)."
        )


def setup(args):
    """:func:`cdam_d2.engine.cli.setup` with the second-stage keys, then the pseudo-label dataset."""
    cfg = cli.setup(args, add_config=add_second_stage_config)
    register_pseudo_labels_from_cfg(cfg, training=not args.eval_only)
    return cfg


def main(args):
    return cli.main(args, setup_cfg=setup, trainer_cls=SecondStageTrainer)
