"""Detectron2 ``DatasetEvaluator`` for semantic segmentation: a drop-in for Detectron2's, faster."""
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
from .metrics import (
    CONVENTIONS,
    argmax_labels,
    boundary_confusion_matrix,
    confusion_matrix,
    ignored_as_last_class,
    invalid_values_message,
    segmentation_metrics,
)
from .rle import encode_label_masks

logger = logging.getLogger(__name__)


class SemSegEvaluator(DatasetEvaluator):
    """Drop-in for ``detectron2.evaluation.SemSegEvaluator`` that is faster and stricter.

    It takes Detectron2's arguments and, by default, does what Detectron2's does: boundary IoU on
    (fewer than 255 classes), RLE predictions written to ``output_dir/sem_seg_predictions.json``
    with dataset category ids, the same result keys in the same order (×100): ``mIoU``,
    ``fwIoU``, per class ``IoU-<class>``, ``BoundaryIoU-<class>`` and ``min(IoU, B-Iou)-<class>``,
    then ``mACC``, ``pACC``, ``ACC-<class>``; ``None`` from ``evaluate`` on non-main ranks.

    The arg-max runs on the prediction's device; the (H, W) labels then go to the CPU as bytes,
    where one histogram per image fills the confusion matrix. Only the matrices (and the
    predictions to write) are gathered across processes.
    """

    def __init__(
        self,
        dataset_name,
        distributed=True,
        output_dir=None,
        *,
        sem_seg_loading_fn=None,
        num_classes=None,
        ignore_label=None,
        convention="detectron2",
        strict=True,
        boundary_iou=None,
        write_predictions=None,
    ):
        """
        Args:
            dataset_name, distributed, output_dir: as in Detectron2.
            sem_seg_loading_fn: ``fn(path, dtype=int) -> (H, W) array`` reading a label file, as
                in Detectron2. By default label maps are read with
                ``cdam_d2.data.label_io.read_label_map`` (the same indices as Detectron2's
                default for index PNGs, palette ones included; other image modes are rejected).
            num_classes, ignore_label: deprecated, as in Detectron2: ``num_classes`` must equal
                ``len(stuff_classes)``; ``ignore_label`` replaces the metadata's.
            convention: "detectron2" (classes absent from the ground truth are left out of the
                means), "mmseg" (a predicted class absent from the ground truth has IoU 0) or
                "release" (the WSSS releases' script: every class is in the means, a class absent
                from both prediction and ground truth with IoU 0); see ``segmentation_metrics``.
                Any other value raises.
            strict: raise on a label value outside [0, C) that is not ``ignore_label``. When
                False, such label pixels are counted as ignored, and their number is logged as a
                warning. A prediction/label size mismatch always raises.
            boundary_iou: report ``BoundaryIoU-<class>`` and ``min(IoU, B-Iou)-<class>``.
                ``None`` (default): as Detectron2, on unless the dataset has 255 classes or more.
            write_predictions: write RLE-encoded predictions to
                ``output_dir/sem_seg_predictions.json``. ``None`` (default): as Detectron2, when
                ``output_dir`` is given.
        """
        if num_classes is not None:
            logger.warning(
                "SemSegEvaluator(num_classes) is deprecated! It should be obtained from metadata."
            )
        if ignore_label is not None:
            logger.warning(
                "SemSegEvaluator(ignore_label) is deprecated! It should be obtained from metadata."
            )
        if convention not in CONVENTIONS:
            raise ValueError(f"Unknown metric convention '{convention}'; use one of {CONVENTIONS}.")
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._convention = convention
        self._strict = strict
        self.sem_seg_loading_fn = sem_seg_loading_fn
        records = DatasetCatalog.get(dataset_name)
        unlabelled = [record["file_name"] for record in records if "sem_seg_file_name" not in record]
        if unlabelled:
            raise ValueError(
                f"Dataset '{dataset_name}' has {len(unlabelled)} images without label maps "
                f"(e.g. {unlabelled[0]}), so it cannot be evaluated here; for a test-server split "
                "write the predictions instead (e.g. tools/export_voc_test.py)."
            )
        self.input_file_to_gt_file = {record["file_name"]: record["sem_seg_file_name"] for record in records}
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        if num_classes is not None and num_classes != self._num_classes:
            raise ValueError(
                f"SemSegEvaluator(num_classes={num_classes}) disagrees with the "
                f"{self._num_classes} stuff_classes of '{dataset_name}'; drop the argument."
            )
        self._ignore_label = meta.ignore_label if ignore_label is None else ignore_label
        # Labels travel as bytes from the device and through the histograms.
        self._label_dtype = torch.uint8 if self._num_classes <= 256 else torch.int32
        self._boundary_iou = self._resolve_boundary_iou(boundary_iou)
        self._write_predictions = self._resolve_write_predictions(write_predictions, meta)

    def _resolve_boundary_iou(self, requested):
        supported = self._num_classes < 255  # the boundary bands are computed on uint8 maps
        if requested is None:
            if not supported:
                logger.warning(
                    f"Boundary IoU is not computed for '{self._dataset_name}': it supports fewer "
                    f"than 255 classes, and the dataset has {self._num_classes}."
                )
            return supported
        if requested and not supported:
            raise ValueError(
                f"Boundary IoU supports fewer than 255 classes, got {self._num_classes}."
            )
        return requested

    def _resolve_write_predictions(self, requested, meta):
        """Whether to write predictions; set the map from contiguous to dataset category ids."""
        if requested is None:
            requested = bool(self._output_dir)
        elif requested and not self._output_dir:
            raise ValueError("write_predictions=True needs an output_dir to write to.")
        dataset_to_contiguous = meta.get("stuff_dataset_id_to_contiguous_id", None)
        self._contiguous_id_to_dataset_id = None
        if requested and dataset_to_contiguous is not None:
            self._contiguous_id_to_dataset_id = {v: k for k, v in dataset_to_contiguous.items()}
            unmapped = sorted(set(range(self._num_classes)) - set(self._contiguous_id_to_dataset_id))
            if unmapped:
                raise ValueError(
                    f"stuff_dataset_id_to_contiguous_id of '{self._dataset_name}' has no dataset "
                    f"id for the contiguous ids {unmapped[:10]}, so predictions of those classes "
                    "cannot be written; complete the mapping or pass write_predictions=False."
                )
        return requested

    def reset(self):
        size = self._num_classes + 1
        self._conf_matrix = np.zeros((size, size), dtype=np.int64)
        self._b_conf_matrix = np.zeros((size, size), dtype=np.int64)
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
            pred = argmax_labels(scores, self._label_dtype).cpu().numpy()
            gt_path = self.input_file_to_gt_file[inp["file_name"]]
            gt = self._load_label_map(gt_path)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"Prediction for '{inp['file_name']}' has size {pred.shape} but its label "
                    f"map '{gt_path}' has size {gt.shape}; models must return sem_seg at the "
                    "input's original 'height' x 'width'."
                )
            conf, invalid = confusion_matrix(pred, gt, self._num_classes, self._ignore_label)
            if invalid:
                self._report_invalid_labels(invalid, gt_path)
            self._conf_matrix += conf
            if self._boundary_iou:
                # Ignored (and, when not strict, invalid) labels become class C, as Detectron2's.
                b_gt = ignored_as_last_class(gt, self._num_classes, self._ignore_label)
                self._b_conf_matrix += boundary_confusion_matrix(pred, b_gt, self._num_classes)
            if self._write_predictions:
                self._predictions.extend(self.encode_json_sem_seg(pred, inp["file_name"]))

    def _load_label_map(self, path):
        if self.sem_seg_loading_fn is None:
            return read_label_map(path)
        labels = np.asarray(self.sem_seg_loading_fn(path, dtype=int))
        if labels.ndim != 2:
            raise ValueError(
                f"sem_seg_loading_fn read '{path}' as an array of shape {labels.shape}; expected "
                "(H, W) class indices."
            )
        return labels

    def _report_invalid_labels(self, invalid, gt_path):
        """Raise (strict) or count label values outside [0, C) that are not the ignore label."""
        if not self._strict:
            self._invalid_pixels += sum(invalid.values())
            return
        raise ValueError(
            f"{invalid_values_message(invalid, gt_path, self._num_classes, self._ignore_label)} Check that "
            "the dataset's label maps store class indices (tools/prepare_*.py write them) and that its "
            "stuff_classes match them; or set CDAM_D2.EVALUATOR.STRICT False to count such pixels as ignored."
        )

    def encode_json_sem_seg(self, sem_seg, input_file_name):
        """(H, W) labels -> Detectron2's COCO-stuff records: one RLE per predicted class."""
        to_dataset_id = self._contiguous_id_to_dataset_id
        return [
            {
                "file_name": input_file_name,
                "category_id": int(label) if to_dataset_id is None else to_dataset_id[label],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("utf-8")},
            }
            for label, rle in encode_label_masks(sem_seg)
        ]

    def evaluate(self):
        conf, boundary_conf = self._conf_matrix, self._b_conf_matrix
        invalid, predictions = self._invalid_pixels, self._predictions
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather((conf, boundary_conf, invalid, predictions))
            if not comm.is_main_process():
                return None  # as Detectron2's; inference_on_dataset turns it into {}
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
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
        if self._write_predictions:
            with open(os.path.join(self._output_dir, "sem_seg_predictions.json"), "w") as f:
                f.write(json.dumps(predictions))

        metrics = segmentation_metrics(conf, self._class_names, self._convention)
        if self._boundary_iou:
            # Detectron2 keeps every class with a non-empty boundary union here.
            boundary = segmentation_metrics(boundary_conf, self._class_names, "mmseg")
        res = OrderedDict((key, metrics[key]) for key in ("mIoU", "fwIoU"))
        for name in self._class_names:
            iou = res[f"IoU-{name}"] = metrics[f"IoU-{name}"]
            if self._boundary_iou:
                b_iou = res[f"BoundaryIoU-{name}"] = boundary[f"IoU-{name}"]
                res[f"min(IoU, B-Iou)-{name}"] = min(iou, b_iou)  # Python's min, as Detectron2
        res.update((key, metrics[key]) for key in ("mACC", "pACC"))
        res.update((f"ACC-{name}", metrics[f"ACC-{name}"]) for name in self._class_names)
        if self._output_dir:
            torch.save(dict(res), os.path.join(self._output_dir, "sem_seg_evaluation.pth"))
        results = OrderedDict({"sem_seg": res})
        logger.info(results)
        return results
