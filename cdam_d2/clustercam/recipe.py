"""ClusterCAM's recipe for the Trainer and the predictor: the release's augmentation and epoch-wise
AdamW schedule, its in-training evaluation schedule with best and verified final checkpoints, and a
test protocol (scales, dense CRF in worker processes) owned by each evaluation."""
from detectron2.data import build_detection_test_loader, build_detection_train_loader

from ..engine.recipe import Recipe
from ..utils.cores import available_cores
from .hooks import clustercam_hooks
from .mapper import ClusterCAMDatasetMapper
from .modeling import CRFParams
from .predictor import ClusterCAMPredictor
from .solver import build_clustercam_lr_scheduler, build_clustercam_optimizer

__all__ = ["ClusterCAMRecipe", "crf_params_from_cfg", "crf_workers_from_cfg"]


def crf_params_from_cfg(crf_cfg):
    """``CRFParams`` from ``MODEL.CLUSTERCAM.TEST.CRF``, or None when the CRF is off."""
    if not crf_cfg.ENABLED:
        return None
    return CRFParams(crf_cfg.NUM_ITERS, crf_cfg.GAUSSIAN_SXY, crf_cfg.GAUSSIAN_COMPAT, crf_cfg.BILATERAL_SXY,
                     crf_cfg.BILATERAL_SRGB, crf_cfg.BILATERAL_COMPAT)


def crf_workers_from_cfg(cfg):
    """CRF worker processes of an evaluation: TEST.CRF.NUM_WORKERS, or when it is 0
    min(cores of this process, images per test batch) (a batch's CRFs are what runs in parallel)."""
    test = cfg.MODEL.CLUSTERCAM.TEST
    if test.CRF.NUM_WORKERS > 0:
        return test.CRF.NUM_WORKERS
    return max(1, min(available_cores(), test.IMS_PER_BATCH))


class ClusterCAMRecipe(Recipe):
    predictor = ClusterCAMPredictor

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=ClusterCAMDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # Several images per batch let the dense CRFs of a batch run in parallel workers.
        return build_detection_test_loader(
            cfg, dataset_name, mapper=ClusterCAMDatasetMapper(cfg, is_train=False),
            batch_size=cfg.MODEL.CLUSTERCAM.TEST.IMS_PER_BATCH)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_clustercam_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_clustercam_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_hooks(cls, cfg, trainer, hooks):
        """In-training evaluation from the segmentation phase on (single scale, no CRF by default),
        the full test protocol after training, ``model_best.pth`` by mIoU, a verified ``model_final.pth``."""
        return clustercam_hooks(cfg, trainer, hooks)

    @classmethod
    def evaluation_context(cls, cfg, model):
        """Around each ``Trainer.test``: infer with ``cfg``'s test protocol (``MODEL.CLUSTERCAM.TEST.SCALES``,
        ``TEST.CRF``); a CRF worker pool, if the protocol has a CRF, lives exactly as long as the evaluation."""
        test = cfg.MODEL.CLUSTERCAM.TEST
        return model.test_protocol(test.SCALES, crf_params_from_cfg(test.CRF), crf_workers_from_cfg(cfg))
