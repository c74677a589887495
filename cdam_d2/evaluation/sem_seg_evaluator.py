"""Detectron2 ``DatasetEvaluator`` for semantic segmentation, on a torch confusion matrix."""
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.label_io import read_label_map
from .metrics import argmax_labels, confusion_matrix, mask_boundary, segmentation_metrics

logger = logging.getLogger(__name__)


class SemSegEvaluator(DatasetEvaluator):
    """Drop-in for ``detectron2.evaluation.SemSegEvaluator`` that is faster and stricter.

    The confusion matrix is accumulated with ``torch.bincount`` on the prediction's device and
    only the matrices are summed across processes. Results have Detectron2's keys (×100):
    ``mIoU``, ``fwIoU``, ``IoU-<class>``, ``mACC``, ``pACC``, ``ACC-<class>`` and, when enabled,
    ``BoundaryIoU-<class>``.
    """

    def __init__(
        self,
        dataset_name,
        distributed=True,
        output_dir=None,
        *,
        convention="detectron2",
        strict=True,
        boundary_iou=False,
        write_predictions=False,
    ):
        """
        Args:
            convention: "detectron2" (classes absent from the ground truth are left out of the
                means) or "mmseg" (a predicted class absent from the ground truth has IoU 0).
            strict: raise on a prediction/label size mismatch or a label value outside [0, C)
                that is not ``ignore_label``. When False, such label pixels are counted as
                ignored, and their number is logged as a warning; size mismatches always raise.
            boundary_iou: also report ``BoundaryIoU-<class>``.
            write_predictions: write RLE-encoded predictions to
                ``output_dir/sem_seg_predictions.json`` (needs pycocotools).
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._convention = convention
        self._strict = strict
        self._boundary_iou = boundary_iou
        self._write_predictions = write_predictions
        self._gt_file = {r["file_name"]: r["sem_seg_file_name"] for r in DatasetCatalog.get(dataset_name)}
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = meta.ignore_label
        if self._boundary_iou and self._num_classes >= 255:
            raise ValueError(f"Boundary IoU supports fewer than 255 classes, got {self._num_classes}.")

    def reset(self):
        size = self._num_classes + 1
        self._conf = torch.zeros(size, size, dtype=torch.int64)
        self._boundary_conf = torch.zeros(size, size, dtype=torch.int64)
        self._invalid_pixels = 0
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            scores = out["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] != self._num_classes:
                raise ValueError(
                    f"Prediction for '{inp['file_name']}' has shape {tuple(scores.shape)}; expected "
                    f"({self._num_classes}, H, W) for the {self._num_classes} stuff_classes of "
                    f"'{self._dataset_name}'."
                )
            pred = argmax_labels(scores)
            gt_path = self._gt_file[inp["file_name"]]
            gt = torch.from_numpy(read_label_map(gt_path))
            if tuple(gt.shape) != tuple(pred.shape):
                raise ValueError(
                    f"Prediction for '{inp['file_name']}' has size {tuple(pred.shape)} but its label "
                    f"map '{gt_path}' has size {tuple(gt.shape)}; models must return sem_seg at the "
                    "input's original 'height' x 'width'."
                )
            conf, invalid = confusion_matrix(pred, gt, self._num_classes, self._ignore_label)
            if invalid:
                self._report_invalid_labels(invalid, gt_path)
            self._conf += conf.cpu()
            if self._boundary_iou:
                # Ignored (and, when not strict, invalid) labels become class C before erosion.
                labelled = (gt >= 0) & (gt < self._num_classes) & (gt != self._ignore_label)
                ignore_as_last = torch.where(labelled, gt.long(), self._num_classes)
                self._boundary_conf += confusion_matrix(
                    mask_boundary(pred), mask_boundary(ignore_as_last), self._num_classes,
                    self._num_classes,
                )[0].cpu()
            if self._write_predictions:
                self._predictions.extend(self._encode_rle(pred.cpu().numpy(), inp["file_name"]))

    def _report_invalid_labels(self, invalid, gt_path):
        """Raise (strict) or count label values outside [0, C) that are not the ignore label."""
        pixels = sum(invalid.values())
        if not self._strict:
            self._invalid_pixels += pixels
            return
        raise ValueError(
            f"Label map '{gt_path}' has values {sorted(invalid)[:10]} outside "
            f"[0, {self._num_classes}) that are not the ignore label {self._ignore_label} "
            f"({pixels} pixels). Check that the dataset's label maps store class indices "
            "(tools/prepare_*.py write them) and that its stuff_classes match them; or set "
            "CDAM_D2.EVALUATOR.STRICT False to count such pixels as ignored."
        )

    @staticmethod
    def _encode_rle(pred, file_name):
        import pycocotools.mask as mask_util  # optional dependency, only for written predictions

        encoded = []
        for label in np.unique(pred):
            rle = mask_util.encode(np.asfortranarray((pred == label).astype(np.uint8)[:, :, None]))[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            encoded.append({"file_name": file_name, "category_id": int(label), "segmentation": rle})
        return encoded

    def evaluate(self):
        conf, boundary_conf, invalid = self._conf, self._boundary_conf, self._invalid_pixels
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather((conf, boundary_conf, invalid, predictions))
            if not comm.is_main_process():
                return {}
            conf = sum(g[0] for g in gathered)
            boundary_conf = sum(g[1] for g in gathered)
            invalid = sum(g[2] for g in gathered)
            predictions = [p for g in gathered for p in g[3]]
        if invalid:
            logger.warning(
                f"{self._dataset_name}: {invalid} label pixels outside [0, {self._num_classes}) "
                "were counted as ignored (CDAM_D2.EVALUATOR.STRICT is False)."
            )
        if conf[:-1, :-1].sum() == 0:
            raise RuntimeError(f"{self._dataset_name}: no labelled pixel was evaluated.")

        res = segmentation_metrics(conf, self._class_names, self._convention)
        if self._boundary_iou:
            # Detectron2 keeps every class with a non-empty boundary union here.
            boundary = segmentation_metrics(boundary_conf, self._class_names, "mmseg")
            for name in self._class_names:
                res[f"BoundaryIoU-{name}"] = boundary[f"IoU-{name}"]
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            torch.save(dict(res), os.path.join(self._output_dir, "sem_seg_evaluation.pth"))
            if self._write_predictions:
                with open(os.path.join(self._output_dir, "sem_seg_predictions.json"), "w") as f:
                    json.dump(predictions, f)
        results = OrderedDict({"sem_seg": res})
        logger.info(results)
        return results
