"""Second stage: Detectron2's DeepLab (``detectron2.projects.deeplab``) trained on exported pseudo-labels.

``tools/train_second_stage.py`` is ``tools/train_net.py`` with this module's :func:`setup` and
:class:`SecondStageTrainer`:

- the config gets DeepLab's keys and ``CDAM_D2.PSEUDO_LABELS`` (:func:`add_second_stage_config`);
- :func:`setup` registers the pseudo-label dataset named by the config in every process (``launch``
  spawns workers that run ``main`` and thus ``setup``, so a registration made only in the parent
  would be missing there);
- the Trainer is cdam_d2's (our evaluator, CPU-capable DDP) with DeepLab's poly schedule and a
  scale / crop / flip training augmentation read by Detectron2's stock ``DatasetMapper``.
"""
import logging

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import transforms as T

from ..config import add_second_stage_config
from ..data.datasets.pseudo_labels import export_command, register_pseudo_label_dataset
from . import cli
from .checkpoint import CoveringCheckpointer
from .trainer import Trainer

logger = logging.getLogger("cdam_d2")


def register_pseudo_labels_from_cfg(cfg, training=True):
    """Register ``CDAM_D2.PSEUDO_LABELS.NAME`` from ``.DIR`` and ``.IMAGES_FROM`` when DIR is set.

    For training, DATASETS.TRAIN listing that name without a DIR raises an error saying which key to
    set; evaluation alone needs no pseudo-labels.
    """
    spec = cfg.CDAM_D2.PSEUDO_LABELS
    if spec.DIR:
        register_pseudo_label_dataset(spec.NAME, spec.DIR, images_from=spec.IMAGES_FROM)
    elif training and spec.NAME in cfg.DATASETS.TRAIN:
        raise ValueError(
            f"DATASETS.TRAIN uses the pseudo-label dataset '{spec.NAME}' but CDAM_D2.PSEUDO_LABELS.DIR is "
            "empty: set it to the folder written by\n  "
            f"{export_command(spec.IMAGES_FROM, '<DIR>')}\n(e.g. append `CDAM_D2.PSEUDO_LABELS.DIR <DIR>`)."
        )


def setup(args):
    """:func:`cdam_d2.engine.cli.setup` with the second-stage keys, then the pseudo-label dataset."""
    cfg = cli.setup(args, add_config=add_second_stage_config)
    register_pseudo_labels_from_cfg(cfg, training=not args.eval_only)
    return cfg


def build_train_augmentations(cfg):
    """Random short-side resize, a crop of ``CDAM_D2.SECOND_STAGE.CROP_SIZE`` (no class covering more
    than ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` of it, when possible), padding of smaller images to
    that size (label padding = ignore) and a horizontal flip."""
    crop_size = tuple(cfg.CDAM_D2.SECOND_STAGE.CROP_SIZE)
    ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    return [
        T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                             cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING),
        T.RandomCrop_CategoryAreaConstraint("absolute", crop_size, cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                                            ignore),
        T.FixedSizeCrop(crop_size, pad=True, seg_pad_value=ignore),  # pads only: the image fits already
        T.RandomFlip(),
    ]


class ImageNetInitCheckpointer(CoveringCheckpointer):
    """Loads a run's initial ``MODEL.WEIGHTS``: ImageNet weights of the backbone.

    Such a file has no weights for the segmentation head, which keeps its initialisation (as
    Detectron2 does); every backbone weight must be covered, so a file that does not fit the
    backbone raises instead of silently training from random init.
    """

    def _load_model(self, checkpoint):
        weights = checkpoint["model"]
        for key, value in self.model.state_dict().items():
            if key.startswith("sem_seg_head."):
                weights.setdefault(key, value)
        return super()._load_model(checkpoint)


class SecondStageTrainer(Trainer):
    """cdam_d2's :class:`Trainer` for ``SemanticSegmentor`` models of Detectron2's DeepLab project."""

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = DatasetMapper(cfg, is_train=True, augmentations=build_train_augmentations(cfg))
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        from detectron2.projects.deeplab import build_lr_scheduler  # WarmupPolyLR, else Detectron2's

        return build_lr_scheduler(cfg, optimizer)

    def resume_or_load(self, resume=True):
        if resume and self.checkpointer.has_checkpoint():
            super().resume_or_load(resume=True)  # the run's own checkpoint: every weight covered
        elif self.cfg.MODEL.WEIGHTS:
            ImageNetInitCheckpointer.from_cfg(self.model, self.cfg).load(self.cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the backbone starts from random init.")


def main(args):
    return cli.main(args, setup_cfg=setup, trainer_cls=SecondStageTrainer)
