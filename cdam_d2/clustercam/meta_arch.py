"""Detectron2 adapter for ClusterCAM (training with on-the-fly pseudo-labels, multi-scale inference)."""
import contextlib
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn
from torch.nn import functional as F

from .modeling import (
    IGNORE_LABEL,
    PAR,
    ClusterCAMNet,
    CRFWorkerPool,
    DenseCRFPostProcessor,
    balanced_segmentation_loss,
    classification_loss,
    denormalize_to_unit,
    PRETRAINED_KEY,
    load_deit_weights,
    multiscale_cams,
    multiscale_segmentation_probs,
    normalize_cams,
    refine_with_background_band,
)
from ..weights import resolve_weights
from .augmentation import random_erasing
from .recipe import ClusterCAMRecipe, crf_params_from_cfg

__all__ = ["ClusterCAM"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class ClusterCAM(nn.Module):
    """ClusterCAM: weakly supervised segmentation from image-level labels; a DeiT with K class tokens and
    cluster attention, whose CAMs give on-the-fly pseudo-labels for a segmentation decoder.

    Training input: equal-size uint8 RGB crops with ``image_labels``; returns ``loss_cls``,
    ``loss_pat`` and, from iteration ``seg_start_iter`` on, ``loss_seg`` (already × seg weight).
    Inference: ``[{"sem_seg": (K+1, height, width)}]``, the max-fused multi-scale decoder softmax, or
    the dense-CRF marginals when a CRF is configured.
    """

    recipe = ClusterCAMRecipe

    @configurable
    def __init__(self, *, net, pixel_mean, pixel_std, par, cam_scales=(1.0, 0.75, 1.25), bg_thr=0.40,
                 ignore_delta=0.10, pseudo_label_train_mode=True, seg_loss_weight=0.1,
                 seg_start_iter=0, random_erasing_prob=0.25, test_scales=(0.5, 0.75, 1.0, 1.25, 1.5),
                 crf=None):
        """
        Args:
            net: a ``ClusterCAMNet``.
            pixel_mean, pixel_std: RGB, 0..255 scale.
            par: the ``PAR`` used for pseudo-labels.
            cam_scales, bg_thr, ignore_delta, pseudo_label_train_mode: pseudo-label settings
                (CAM scales, centre and half-width of the background band, CAMs in train mode).
            seg_loss_weight, seg_start_iter: the segmentation term and the iteration it starts at.
            random_erasing_prob: per-image RandomErasing probability in normalised space.
            test_scales: inference scales; crf: a ``DenseCRFPostProcessor`` or None. Outside an
                evaluation (``evaluation_context`` / ``test_protocol``) the CRF runs in this process.
        """
        super().__init__()
        self.net = net
        self.par = par
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.cam_scales = tuple(cam_scales)
        self.bg_thr = bg_thr
        self.ignore_delta = ignore_delta
        self.pseudo_label_train_mode = pseudo_label_train_mode
        self.seg_loss_weight = seg_loss_weight
        self.seg_start_iter = seg_start_iter
        self.random_erasing_prob = random_erasing_prob
        self.test_scales = tuple(test_scales)
        self.crf = crf
        self._checked_datasets = set()

    @classmethod
    def from_config(cls, cfg):
        if cfg.INPUT.FORMAT != "RGB":
            raise ValueError(f"ClusterCAM expects INPUT.FORMAT 'RGB', got '{cfg.INPUT.FORMAT}'")
        cc = cfg.MODEL.CLUSTERCAM
        net = ClusterCAMNet(
            num_classes=cc.NUM_CLASSES, embed_dim=cc.EMBED_DIM, depth=cc.DEPTH, num_heads=cc.NUM_HEADS,
            mlp_ratio=cc.MLP_RATIO, patch_size=cc.PATCH_SIZE, pos_embed_grid=cc.POS_EMBED_GRID,
            cluster_depth=cc.CLUSTER_DEPTH, cluster_cell=cc.CLUSTER_CELL, cluster_iters=cc.CLUSTER_ITERS,
            cam_last_layers=cc.CAM_LAST_LAYERS, drop_path=cc.DROP_PATH, decoder_dim=cc.DECODER_DIM,
            decoder_dilation=cc.DECODER_DILATION, clamp_alpha=cc.CLAMP_ALPHA)
        if resolve_weights(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS").kind != "random":
            logger.info("MODEL.WEIGHTS is set; skipping the DeiT initialisation (%s).", cc.PRETRAINED or "none")
        elif resolve_weights(cc.PRETRAINED, PRETRAINED_KEY).kind != "random":
            load_deit_weights(net, cc.PRETRAINED)
        else:
            logger.warning("ClusterCAM starts from RANDOM weights (MODEL.CLUSTERCAM.PRETRAINED and "
                           "MODEL.WEIGHTS are empty or 'random'). The method assumes an ImageNet DeiT backbone; CAMs "
                           "and pseudo-labels of a random ViT are noise. Fine for tests only.")
        pl = cc.PSEUDO_LABEL
        crf_params = crf_params_from_cfg(cc.TEST.CRF)
        return {
            "net": net,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "par": PAR(pl.PAR_DILATIONS, pl.PAR_ITERS, pl.PAR_W1, pl.PAR_W2),
            "cam_scales": pl.CAM_SCALES,
            "bg_thr": pl.BG_THR,
            "ignore_delta": pl.IGNORE_DELTA,
            "pseudo_label_train_mode": pl.TRAIN_MODE,
            "seg_loss_weight": cc.LOSS.SEG_WEIGHT,
            "seg_start_iter": cc.LOSS.SEG_START_ITER,
            "random_erasing_prob": cc.INPUT.RANDOM_ERASING_PROB,
            "test_scales": cc.TEST.SCALES,
            "crf": None if crf_params is None else DenseCRFPostProcessor(crf_params),
        }

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def num_classes(self):
        return self.net.num_classes

    def normalize(self, image):
        """uint8 (3, H, W) or (B, 3, H, W) RGB -> float normalised."""
        return (image.to(self.device).float() - self.pixel_mean) / self.pixel_std

    def multi_hot_labels(self, batched_inputs):
        """(B, K) float from each record's ``image_labels`` (ids 1..K)."""
        labels = torch.zeros(len(batched_inputs), self.num_classes, device=self.device)
        for row, record in enumerate(batched_inputs):
            if "image_labels" not in record:
                raise KeyError(f"ClusterCAM training record {record.get('file_name', row)} has no "
                               "'image_labels'; train on a dataset with image-level labels")
            ids = list(record["image_labels"])
            if any(not 1 <= i <= self.num_classes for i in ids):
                of = f" of {record['file_name']}" if "file_name" in record else ""
                raise ValueError(f"image_labels {ids}{of} must lie in [1, {self.num_classes}] "
                                 "(MODEL.CLUSTERCAM.NUM_CLASSES)")
            labels[row, [i - 1 for i in ids]] = 1.0
        return labels

    def forward(self, batched_inputs):
        if self.training:
            return self.losses(batched_inputs)
        return self.inference(batched_inputs)

    # ------------------------------------------------------------------------------------- training
    def losses(self, batched_inputs):
        """Training records (``image`` (3, S, S) uint8 crops of one size, ``image_labels``) -> dict of
        scalar losses: ``loss_cls``, ``loss_pat`` and, from ``seg_start_iter`` on, ``loss_seg``."""
        sizes = {tuple(x["image"].shape[-2:]) for x in batched_inputs}
        if len(sizes) != 1:
            raise ValueError(f"ClusterCAM training needs equal-size crops in a batch, got sizes {sorted(sizes)}")
        images = self.normalize(torch.stack([x["image"] for x in batched_inputs]))
        images = random_erasing(images, self.random_erasing_prob)
        labels = self.multi_hot_labels(batched_inputs)
        storage = get_event_storage()
        seg_phase = storage.iter >= self.seg_start_iter
        pseudo_labels = self.pseudo_labels(images, labels) if seg_phase else None
        cls_logits, pat_logits, segs = self.net(images, with_segmentation=seg_phase)
        losses = {
            "loss_cls": classification_loss(cls_logits, labels),
            "loss_pat": classification_loss(pat_logits, labels),
        }
        if seg_phase:
            losses["loss_seg"] = self.seg_loss_weight * balanced_segmentation_loss(
                segs, pseudo_labels, across_processes=True)
            self._log_pseudo_labels(storage, pseudo_labels)
        for index, alpha in enumerate(self.net.alphas().tolist()):
            storage.put_scalar(f"clustercam/alpha_{index}", alpha, smoothing_hint=False)
        return losses

    @staticmethod
    def _log_pseudo_labels(storage, pseudo_labels):
        total = pseudo_labels.numel()
        ignore = (pseudo_labels == IGNORE_LABEL).sum().item()
        background = (pseudo_labels == 0).sum().item()
        storage.put_scalar("clustercam/pseudo_background", background / total)
        storage.put_scalar("clustercam/pseudo_ignore", ignore / total)
        storage.put_scalar("clustercam/pseudo_foreground", (total - ignore - background) / total)

    @torch.no_grad()
    def class_activation_maps(self, images, labels, train_mode=None):
        """Normalised, label-masked multi-scale CAMs (B, K, H, W) in [0, 1) for normalised images.

        ``train_mode`` (default: PSEUDO_LABEL.TRAIN_MODE) selects DropPath on/off during the CAM passes.
        """
        train_mode = self.pseudo_label_train_mode if train_mode is None else train_mode
        was_training = self.net.training
        self.net.train(train_mode)
        try:
            cams = multiscale_cams(self.net, images, self.cam_scales)
        finally:
            self.net.train(was_training)
        return normalize_cams(cams, labels)

    @torch.no_grad()
    def pseudo_labels(self, images, labels, train_mode=None):
        """Refined pseudo-labels (B, H, W) in {0, 1..K, 255} for normalised images (B, 3, H, W)."""
        return self.refine_pseudo_labels(images, labels, self.class_activation_maps(images, labels, train_mode))

    @torch.no_grad()
    def refine_pseudo_labels(self, images, labels, cams):
        """Pseudo-labels (B, H, W) from the ``class_activation_maps`` (B, K, H, W) of normalised images."""
        # Refinement in float32: PAR's softmaxes and the thresholds need no autocast.
        with torch.autocast(device_type=self.device.type, enabled=False):
            images_unit = denormalize_to_unit(images, self.pixel_mean, self.pixel_std)
            return refine_with_background_band(cams.float(), labels, images_unit, self.par,
                                               self.bg_thr, self.ignore_delta)

    # ------------------------------------------------------------------------------------ inference
    @contextlib.contextmanager
    def test_protocol(self, scales, crf_params=None, crf_workers=1):
        """Within the block, inference fuses ``scales`` and applies the dense CRF with ``crf_params``
        (None: no CRF) in ``crf_workers`` processes (1: in this process). The workers start with the
        first batch that needs them and end with the block; the previous settings come back after it."""
        saved = (self.test_scales, self.crf)
        with contextlib.ExitStack() as stack:
            pool = None
            if crf_params is not None and crf_workers > 1:
                pool = stack.enter_context(CRFWorkerPool(crf_workers))
            self.test_scales = tuple(scales)
            self.crf = None if crf_params is None else DenseCRFPostProcessor(crf_params, pool)
            try:
                yield self
            finally:
                self.test_scales, self.crf = saved

    def _check_dataset(self, record):
        """Raise once per dataset if its ``stuff_classes`` do not match the model's K + 1 outputs."""
        name = record.get("meta", {}).get("dataset_name")
        if name is None or name in self._checked_datasets:
            return
        classes = MetadataCatalog.get(name).get("stuff_classes", None)
        if classes is not None and len(classes) != self.num_classes + 1:
            raise ValueError(f"dataset '{name}' has {len(classes)} classes but the model predicts "
                             f"{self.num_classes + 1} (MODEL.CLUSTERCAM.NUM_CLASSES={self.num_classes} + background)")
        self._checked_datasets.add(name)

    @torch.no_grad()
    def inference(self, batched_inputs):
        """Records with ``image`` (3, H, W) uint8 -> ``[{"sem_seg": (K+1, height, width)}]``: max-fused
        multi-scale decoder probabilities, or the dense-CRF marginals when the CRF is enabled."""
        probs = []
        for record in batched_inputs:
            self._check_dataset(record)
            image = self.normalize(record["image"]).unsqueeze(0)
            probs.append(multiscale_segmentation_probs(self.net, image, self.test_scales))
        if self.crf is not None:
            images = [record["image"].permute(1, 2, 0).cpu().numpy().astype(np.uint8) for record in batched_inputs]
            names = [record.get("file_name", f"image {i} of the batch") for i, record in enumerate(batched_inputs)]
            marginals = self.crf(images, [p.cpu().numpy() for p in probs], names)
            probs = [torch.from_numpy(q).to(self.device) for q in marginals]
        results = []
        for record, prob in zip(batched_inputs, probs):
            size = (record.get("height", prob.shape[1]), record.get("width", prob.shape[2]))
            if tuple(prob.shape[1:]) != size:
                prob = F.interpolate(prob[None], size=size, mode="bilinear", align_corners=False)[0]
            results.append({"sem_seg": prob})
        return results
