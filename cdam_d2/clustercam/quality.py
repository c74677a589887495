"""What the decoder learns from, measured during training: each in-training evaluation also scores the
pseudo-labels and the CAM seeds of a fixed subset of the training split against its label maps, and puts
the ClusterCAM panel of one fixed training image into the event storage (TensorBoard shows it).

Keys (``MODEL.CLUSTERCAM.TEST.IN_TRAINING``): ``PSEUDO_LABEL_IMAGES`` images (0: off), evenly spread over
``DATASETS.TRAIN[0]``; ``PANEL_IMAGE``, the index of the panel's image in that split (-1: off), checked
when the monitor is built. Label values outside [0, C) other than the ignore label raise an error naming
the file, or with ``CDAM_D2.EVALUATOR.STRICT`` False count as ignored with a warning, as in the evaluator.

The maps are those ``tools/export_pseudo_labels.py`` writes (eval mode, whole images at their size, from
the image-level labels): ``pseudo_label/*`` scores the PAR-refined labels, whose ignore band counts as a
miss, ``cam_seed/*`` the arg-max over [PSEUDO_LABEL.BG_THR; CAMs]. Metrics follow the WSSS releases'
convention (IoU over every class; FP, FN), as ``tools/evaluate_predictions.py`` reports them.
"""
import logging

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from ..data.datasets import spread_subset
from ..data.datasets.pseudo_labels import record_image_id
from ..data.image_io import read_image_checked
from ..data.label_io import read_label_map
from ..evaluation.metrics import confusion_matrix, ignored_as_last_class, invalid_values_message, segmentation_metrics
from .modeling import IGNORE_LABEL, cams_to_labels
from .visualize import draw_panel

__all__ = ["PANEL_NAME", "TrainingMapsMonitor", "unwrap_model"]

logger = logging.getLogger(__name__)

CONVENTION = "release"
PANEL_NAME = "clustercam/panel"
KEYS = "MODEL.CLUSTERCAM.TEST.IN_TRAINING"


def unwrap_model(model):
    """The model inside a DistributedDataParallel wrapper (or the model)."""
    return model.module if hasattr(model, "module") else model


class TrainingMapsMonitor:
    """Scores the pseudo-labels and CAM seeds of a fixed training subset, and draws the panel of one
    fixed training image, for the in-training evaluations."""

    def __init__(self, cfg):
        options = cfg.MODEL.CLUSTERCAM.TEST.IN_TRAINING
        self.dataset = cfg.DATASETS.TRAIN[0] if len(cfg.DATASETS.TRAIN) else ""
        self.count = options.PSEUDO_LABEL_IMAGES
        self.panel_index = options.PANEL_IMAGE
        self.image_format = cfg.INPUT.FORMAT
        self.strict = cfg.CDAM_D2.EVALUATOR.STRICT
        if self.count < 0:
            raise ValueError(f"{KEYS}.PSEUDO_LABEL_IMAGES must be >= 0 (0: off), got {self.count}")
        if self.panel_index < -1:
            raise ValueError(f"{KEYS}.PANEL_IMAGE must be -1 (off) or the index of a training image, "
                             f"got {self.panel_index}")
        self._records = None
        if self.panel_index >= 0 and self.dataset and self.panel_index >= len(self.records()):
            raise ValueError(f"{KEYS}.PANEL_IMAGE {self.panel_index} is past the {len(self.records())} images of "
                             f"'{self.dataset}' (DATASETS.TRAIN[0]); use an index below it, or -1 for no panel.")

    @property
    def enabled(self):
        return bool(self.dataset) and (self.count > 0 or self.panel_index >= 0)

    def records(self):
        if self._records is None:
            self._records = DatasetCatalog.get(self.dataset)
        return self._records

    def class_names(self, model):
        names = MetadataCatalog.get(self.dataset).get("stuff_classes", None)
        if names is None or len(names) != model.num_classes + 1:
            names = ["background"] + [f"class {index}" for index in range(1, model.num_classes + 1)]
        return list(names)

    def _image(self, record):
        return read_image_checked(record, format=self.image_format)

    def _checked_labels(self, path, invalid, num_classes, ignore_label):
        """The number of ``invalid`` label pixels ({value: pixels}) of the label map ``path`` to count as
        ignored; raises when strict."""
        if invalid and self.strict:
            raise ValueError(
                f"{invalid_values_message(invalid, path, num_classes, ignore_label)} It is in the subset of "
                f"'{self.dataset}' whose pseudo-labels are scored during training ({KEYS}.PSEUDO_LABEL_IMAGES). "
                "Fix the label maps (tools/prepare_*.py write class indices), set CDAM_D2.EVALUATOR.STRICT False "
                f"to count such pixels as ignored, or {KEYS}.PSEUDO_LABEL_IMAGES 0 to score nothing.")
        return sum(invalid.values())

    @torch.no_grad()
    def scores(self, model):
        """{"pseudo_label": {mIoU, FP, FN, ignored}, "cam_seed": {mIoU, FP, FN}} (×100) on the subset, or {}
        when off. Every process scores its share of the subset; the counts are summed. The model runs in
        eval mode; its mode is restored afterwards."""
        if self.count == 0 or not self.dataset:
            return {}
        model = unwrap_model(model)
        records = self.records()
        subset = [records[i] for i in spread_subset(self.count, len(records))]
        unlabelled = [r["file_name"] for r in subset if "sem_seg_file_name" not in r or "image_labels" not in r]
        if unlabelled:
            logger.warning("Pseudo-label quality is not measured: %d images of '%s' lack label maps or image-level "
                           "labels (e.g. %s).", len(unlabelled), self.dataset, unlabelled[0])
            self.count = 0
            return {}
        num_classes = model.num_classes + 1
        ignore_label = MetadataCatalog.get(self.dataset).get("ignore_label", IGNORE_LABEL)
        confusions = {"pseudo_label": 0, "cam_seed": 0}
        invalid_pixels = 0
        was_training = model.training
        model.eval()
        try:
            for record in subset[comm.get_rank()::comm.get_world_size()]:
                image = torch.as_tensor(np.ascontiguousarray(self._image(record).transpose(2, 0, 1)))
                normalized = model.normalize(image)[None]
                labels = model.multi_hot_labels([record])
                cams = model.class_activation_maps(normalized, labels, train_mode=False)
                maps = {"pseudo_label": model.refine_pseudo_labels(normalized, labels, cams)[0],
                        "cam_seed": cams_to_labels(cams, model.bg_thr)[0]}
                gt_path = record["sem_seg_file_name"]
                gt = read_label_map(gt_path)
                for name, label_map in maps.items():
                    # The ignore band of a pseudo-label: no class (row C), a miss of the pixel's label.
                    pred = ignored_as_last_class(label_map.cpu().numpy(), num_classes, IGNORE_LABEL)
                    conf, invalid = confusion_matrix(pred, gt, num_classes, ignore_label)
                    confusions[name] = confusions[name] + conf
                # The invalid values are those of the label map: the same for both maps, counted once.
                invalid_pixels += self._checked_labels(gt_path, invalid, num_classes, ignore_label)
        finally:
            model.train(was_training)
        invalid_pixels = sum(comm.all_gather(invalid_pixels))
        if invalid_pixels:
            logger.warning("%d label pixels of the pseudo-label subset of '%s' lie outside [0, %d) and were counted "
                           "as ignored (CDAM_D2.EVALUATOR.STRICT is False).", invalid_pixels, self.dataset, num_classes)
        names = self.class_names(model)
        results = {}
        for name, conf in confusions.items():
            conf = sum(comm.all_gather(conf))
            metrics = segmentation_metrics(conf, names, CONVENTION)
            results[name] = {key: metrics[key] for key in ("mIoU", "FP", "FN")}
            if name == "pseudo_label":  # the share of labelled pixels in the ignore band (row C: no class)
                results[name]["ignored"] = float(100.0 * conf[-1, :-1].sum() / max(1, conf[:, :-1].sum()))
        logger.info("Pseudo-label quality on %d images of %s (%s convention): %s", len(subset), self.dataset,
                    CONVENTION, results)
        return results

    @torch.no_grad()
    def panel(self, model):
        """(3, H, W) uint8 tensor of the panel of training image ``PANEL_IMAGE``, or None when off."""
        if self.panel_index < 0 or not self.dataset:
            return None
        model = unwrap_model(model)
        record = self.records()[self.panel_index]
        gt = read_label_map(record["sem_seg_file_name"]) if "sem_seg_file_name" in record else None
        classes = sorted(record.get("image_labels", []))
        picture = draw_panel(model, self._image(record), classes, self.class_names(model), gt,
                             title=f"{record_image_id(record)} ({self.dataset}, image {self.panel_index})")
        return torch.from_numpy(np.ascontiguousarray(picture.transpose(2, 0, 1)))
