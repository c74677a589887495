"""The second stage's recipe: Detectron2's DeepLab (``detectron2.projects.deeplab``) trained on exported
pseudo-labels, with cdam_d2's Trainer (its evaluator, CPU-capable DDP), DeepLab's poly schedule, a scale /
crop / flip augmentation read by Detectron2's stock ``DatasetMapper``, and ImageNet backbone weights
whose every backbone tensor must be covered."""
import logging

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import transforms as T

from ..engine.checkpoint import CoveringCheckpointer
from ..engine.recipe import Recipe
from ..engine.trainer import Trainer

__all__ = ["ImageNetInitCheckpointer", "SecondStageRecipe", "SecondStageTrainer", "build_train_augmentations"]

logger = logging.getLogger("cdam_d2")


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


class SecondStageRecipe(Recipe):
    """The recipe of ``SemanticSegmentor`` models of Detectron2's DeepLab project."""

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = DatasetMapper(cfg, is_train=True, augmentations=build_train_augmentations(cfg))
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        from detectron2.projects.deeplab import build_lr_scheduler  # WarmupPolyLR, else Detectron2's

        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def load_initial_weights(cls, cfg, checkpointer):
        if cfg.MODEL.WEIGHTS:
            ImageNetInitCheckpointer.from_cfg(checkpointer.model, cfg).load(cfg.MODEL.WEIGHTS)
        else:
            logger.warning("MODEL.WEIGHTS is empty: the backbone starts from random init.")


class SecondStageTrainer(Trainer):
    """cdam_d2's :class:`Trainer` with the second stage's recipe (its meta-architecture is Detectron2's
    ``SemanticSegmentor``, which names no recipe)."""

    recipe = SecondStageRecipe
