"""Config of a second-stage segmenter (Detectron2's DeepLab) trained on exported pseudo-labels."""


def add_second_stage_config(cfg):
    """Add the plugin keys (:func:`add_cdam_config`), DeepLab's keys (``add_deeplab_config``) and
    ``CDAM_D2.PSEUDO_LABELS`` / ``CDAM_D2.SECOND_STAGE``, in place; idempotent. Needs detectron2
    (``detectron2.projects.deeplab``, which also registers DeepLab's backbone and heads)."""
    from detectron2.projects.deeplab import add_deeplab_config

    from ..config import add_cdam_config

    add_cdam_config(cfg)
    if "POLY_LR_POWER" not in cfg.SOLVER:
        add_deeplab_config(cfg)
    if "PSEUDO_LABELS" in cfg.CDAM_D2:
        return cfg
    node = type(cfg)
    # Exported pseudo-labels (tools/export_pseudo_labels.py --output DIR), registered as dataset
    # NAME (list it in DATASETS.TRAIN) with the images of IMAGES_FROM, in every process at setup.
    cfg.CDAM_D2.PSEUDO_LABELS = node()
    cfg.CDAM_D2.PSEUDO_LABELS.DIR = ""
    cfg.CDAM_D2.PSEUDO_LABELS.NAME = "cdam_pseudo_labels"
    cfg.CDAM_D2.PSEUDO_LABELS.IMAGES_FROM = "cdam_voc21_sem_seg_train_aug"
    cfg.CDAM_D2.SECOND_STAGE = node()
    # Training crop (H, W) after the random resize; smaller images are padded (labels with
    # MODEL.SEM_SEG_HEAD.IGNORE_VALUE). INPUT.CROP stays disabled so that DeepLab's ASPP pools
    # globally, which test images of any size need.
    cfg.CDAM_D2.SECOND_STAGE.CROP_SIZE = (512, 512)
    return cfg
