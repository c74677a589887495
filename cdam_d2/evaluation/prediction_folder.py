"""Score a folder of predictions against a dataset's label maps (``tools/evaluate_predictions.py``;
no detectron2 needed here).

Two kinds of prediction files, one per image, named by the image id:

- ``<image_id>.png``: class-index label maps (values in [0, C), or the ignore label, which counts
  as a miss of the pixel's class, as in the WSSS releases' evaluation script);
- ``<image_id>.npy``: CAM dictionaries {foreground class index (0-based): (H, W) float map}. At a
  background threshold t a pixel is background when no class map exceeds t, else the class with the
  largest map (classes absent from the dictionary score 0; ties go to background, then to the
  lowest class): the arg-max over [t, maps of classes 1..C-1] with background first.

For CAM dictionaries every threshold of a sweep is scored in one pass over the images: each pixel's
best class and score are computed once, and one histogram per image keyed by how many thresholds
the score exceeds gives every threshold's confusion matrix by cumulative sums
(:func:`cdam_d2.evaluation.metrics.threshold_histogram`). Images are scored in parallel processes.
"""
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..data.cam_io import read_cam_dict
from ..data.label_io import read_label_map
from ..utils.cores import available_cores
from ..utils.files import save_json
from .metrics import (
    confusion_matrix,
    ignored_as_last_class,
    invalid_values,
    invalid_values_message,
    segmentation_metrics,
    threshold_confusion_matrices,
    threshold_histogram,
)

__all__ = ["PREDICTION_TYPES", "GroundTruth", "FolderScore", "score_folder", "folder_metrics", "format_report",
           "curve_thresholds", "cam_peaks"]

logger = logging.getLogger(__name__)

PREDICTION_TYPES = ("png", "npy")
_SHOWN = 10  # file names quoted in an error


@dataclass(frozen=True)
class GroundTruth:
    """One image to score: its id (the prediction's file name without extension) and label map."""

    image_id: str
    label_path: str


@dataclass
class FolderScore:
    """Confusion matrices of a folder.

    Attributes:
        confusions: (T, C+1, C+1) int64, one per threshold (T = 1 for label PNGs), laid out as
            :func:`cdam_d2.evaluation.metrics.confusion_matrix`'s.
        thresholds: the T background thresholds, or [None] for label PNGs.
        missing: ids of images without a prediction file (scored as all-ignore predictions).
    """

    confusions: np.ndarray
    thresholds: List[Optional[float]]
    missing: List[str] = field(default_factory=list)


def curve_thresholds(start: int, end: int) -> List[float]:
    """The release's sweep: START/100, ..., (END-1)/100."""
    if end <= start:
        raise ValueError(f"--curve START END needs END > START, got {start} {end}")
    return [index / 100 for index in range(start, end)]


def cam_peaks(cams: Dict[int, np.ndarray], shape, num_classes: int):
    """Best foreground score and class per pixel of a CAM dictionary, as the release's arg-max sees them.

    Args:
        cams: {foreground class index k (label k + 1): (H, W) map}; maps are compared in float32.
        shape: (H, W); num_classes: C, background included.

    Returns:
        peak (H, W) float32 and peak_class (H, W) uint8/int64 in [1, C): the first class reaching the
        maximum over all C-1 foreground maps, absent classes being 0.
    """
    keys = sorted(cams)
    absent = sorted(set(range(num_classes - 1)) - set(keys))
    dtype = np.uint8 if num_classes <= 256 else np.int64
    if not keys:
        return np.zeros(shape, np.float32), np.full(shape, absent[0] + 1, dtype)
    stack = np.stack([np.asarray(cams[key], dtype=np.float32) for key in keys])
    peak = stack.max(axis=0)
    peak_class = (np.asarray(keys) + 1).astype(dtype)[stack.argmax(axis=0)]
    if absent:  # absent classes score 0: they win where every map is negative, and ties at 0 go to the lowest
        first_absent = absent[0] + 1
        negative = peak < 0
        peak[negative] = 0
        peak_class[negative | ((peak == 0) & (peak_class > first_absent))] = first_absent
    return peak, peak_class


def _check_labels(invalid, label_path, num_classes, ignore_label):
    if invalid:
        raise ValueError(invalid_values_message(invalid, label_path, num_classes, ignore_label))


def _check_size(prediction_path, size, label_path, label_size):
    if tuple(size) != tuple(label_size):
        raise ValueError(f"Prediction '{prediction_path}' has size {tuple(size)} but its label map '{label_path}' "
                         f"has size {tuple(label_size)}; predictions must be at the image's size.")


def _png_prediction(path, num_classes, ignore_label):
    """(H, W) prediction in [0, C] (C = the ignore label: no class) of a label PNG."""
    pred = read_label_map(path)
    bad = invalid_values(pred, num_classes, ignore_label)
    if bad:
        raise ValueError(f"Prediction '{path}' has values {sorted(bad)[:_SHOWN]} outside [0, {num_classes}) that "
                         f"are not the ignore label {ignore_label}; label PNGs must hold class indices "
                         "(tools/export_pseudo_labels.py writes them).")
    return ignored_as_last_class(pred, num_classes, ignore_label)


def _cam_peaks_of_file(path, num_classes, label_size):
    cams = read_cam_dict(path)
    for key, value in cams.items():
        if not 0 <= key < num_classes - 1:
            raise ValueError(f"CAM file '{path}' has the class index {key}; the dataset's foreground classes are "
                             f"0..{num_classes - 2} (0-based, background excluded).")
        if value.shape != tuple(label_size):
            raise ValueError(f"CAM file '{path}': the map of class {key} has size {value.shape} but the image's "
                             f"label map has size {tuple(label_size)}; maps must be at the image's size.")
        if not np.isfinite(value).all():
            raise ValueError(f"CAM file '{path}': the map of class {key} has NaN or infinite values.")
    return cam_peaks(cams, label_size, num_classes)


def _score_chunk(job):
    """Worker: (items, settings) -> (summed counts, number of images). Counts: (C+1, C+1) confusion
    for PNGs and missing files, plus the (T+1, C, C+1) threshold histogram for CAM dictionaries."""
    items, kind, num_classes, ignore_label, thresholds = job
    conf = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    hist = None
    for prediction_path, label_path in items:
        gt = read_label_map(label_path)
        if prediction_path is None:  # missing: an all-ignore prediction, every labelled pixel a miss
            no_class = np.full(gt.shape, num_classes, np.uint8 if num_classes <= 255 else np.int64)
            counts, invalid = confusion_matrix(no_class, gt, num_classes, ignore_label)
            _check_labels(invalid, label_path, num_classes, ignore_label)
            conf += counts
            continue
        if kind == "png":
            pred = _png_prediction(prediction_path, num_classes, ignore_label)
            _check_size(prediction_path, pred.shape, label_path, gt.shape)
            counts, invalid = confusion_matrix(pred, gt, num_classes, ignore_label)
            _check_labels(invalid, label_path, num_classes, ignore_label)
            conf += counts
        else:
            peak, peak_class = _cam_peaks_of_file(prediction_path, num_classes, gt.shape)
            counts, invalid = threshold_histogram(peak, peak_class, gt, thresholds, num_classes, ignore_label)
            _check_labels(invalid, label_path, num_classes, ignore_label)
            hist = counts if hist is None else hist + counts
    return conf, hist, len(items)


def _pair_files(items: Sequence[GroundTruth], folder: str, kind: str, allow_missing: bool):
    """[(prediction path or None, label path)] in ``items`` order and the ids without a prediction."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Prediction folder '{folder}' does not exist.")
    extension = f".{kind}"
    present = {name[:-len(extension)] for name in os.listdir(folder)
               if name.endswith(extension) and not name.startswith(".")}
    ids = [item.image_id for item in items]
    extra = sorted(present - set(ids))
    if extra:
        raise ValueError(f"{len(extra)} {extension} files in '{folder}' belong to no image of the dataset, e.g. "
                         f"{[name + extension for name in extra[:_SHOWN]]}; score the folder against the dataset "
                         "it was written for, or remove them.")
    missing = [image_id for image_id in ids if image_id not in present]
    if missing and not allow_missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(ids)} images have no prediction in '{folder}', e.g. "
            f"{[os.path.join(folder, name + extension) for name in missing[:_SHOWN]]}. Write them (the exports "
            "resume where they stopped), or pass --allow-missing to score them as all-ignore predictions.")
    pairs = [(os.path.join(folder, item.image_id + extension) if item.image_id in present else None, item.label_path)
             for item in items]
    return pairs, missing


def score_folder(items: Sequence[GroundTruth], folder: str, kind: str, num_classes: int, ignore_label: int,
                 thresholds: Optional[Sequence[float]] = None, workers: int = 0, allow_missing: bool = False,
                 progress: bool = True) -> FolderScore:
    """Confusion matrices of the predictions in ``folder`` against ``items``' label maps.

    Args:
        kind: "png" (label maps) or "npy" (CAM dictionaries, scored at each of ``thresholds``).
        num_classes: C, background (class 0) included; ignore_label: the label maps' ignore value.
        workers: processes (0: the cores this process may use; 1: this process).
        allow_missing: score images without a prediction file as all-ignore predictions instead of failing.
    """
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"prediction type {kind!r} is not one of {PREDICTION_TYPES}")
    if kind == "npy" and not thresholds:
        raise ValueError("CAM dictionaries (.npy) need a background threshold or a threshold curve")
    if kind == "png" and thresholds:
        raise ValueError("label PNGs take no background threshold (it applies to CAM dictionaries, --type npy)")
    if not items:
        raise ValueError("no images to score")
    pairs, missing = _pair_files(items, folder, kind, allow_missing)
    if missing:
        logger.warning("%d of %d images have no prediction file in %s; they are scored as all-ignore predictions "
                       "(every labelled pixel a miss), e.g. %s", len(missing), len(items), folder, missing[:_SHOWN])
    workers = workers or available_cores()
    thresholds = [float(t) for t in thresholds] if kind == "npy" else []
    # Chunks amortise the transfer of the (large, for sweeps) histograms; small enough for a moving bar.
    size = max(1, min(256 if kind == "npy" else 32, len(pairs) // (workers * 16)))
    jobs = [(pairs[start:start + size], kind, num_classes, ignore_label, np.asarray(thresholds, np.float32))
            for start in range(0, len(pairs), size)]
    conf = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    hist = np.zeros((len(thresholds) + 1, num_classes, num_classes + 1), np.int64) if kind == "npy" else None
    with tqdm(total=len(pairs), desc=f"scoring {folder}", unit="image", disable=not progress) as bar:
        if workers <= 1 or len(jobs) == 1:
            results = map(_score_chunk, jobs)
            pool = None
        else:
            pool = multiprocessing.Pool(min(workers, len(jobs)))
            results = pool.imap_unordered(_score_chunk, jobs)
        try:
            for chunk_conf, chunk_hist, count in results:
                conf += chunk_conf
                if chunk_hist is not None:
                    hist += chunk_hist
                bar.update(count)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    confusions = conf[None] if kind == "png" else threshold_confusion_matrices(hist) + conf
    # Columns [0, C) of every row, the no-class row included, hold the labelled pixels of the ground truth.
    if confusions[0, :, :-1].sum() == 0:
        raise ValueError(f"The label maps of the {len(items)} images have no labelled pixel: every pixel is the "
                         f"ignore label {ignore_label} (e.g. '{items[0].label_path}'), so there is nothing to "
                         "score; check the dataset's label maps and its ignore_label.")
    return FolderScore(confusions, [None] if kind == "png" else thresholds, missing)


def folder_metrics(score: FolderScore, class_names: Sequence[str], convention: str = "release") -> Dict:
    """The report of a :class:`FolderScore` (JSON-ready): per threshold mIoU, FP, FN and per-class IoU
    (×100) under ``convention``; for several thresholds also ``best`` (the highest mIoU, the first on
    ties) and ``first_peak`` (where the release's sweep stops: the last threshold before the first one
    that does not improve the mIoU)."""
    results = []
    for threshold, conf in zip(score.thresholds, score.confusions):
        metrics = segmentation_metrics(conf, class_names, convention)
        results.append({
            "threshold": threshold,
            "mIoU": metrics["mIoU"], "FP": metrics["FP"], "FN": metrics["FN"],
            "IoU": {name: metrics[f"IoU-{name}"] for name in class_names},
        })
    report = {"convention": convention, "missing": list(score.missing), "results": results}
    if len(results) > 1:
        best = max(range(len(results)), key=lambda index: (results[index]["mIoU"], -index))
        peak = 0
        while peak + 1 < len(results) and results[peak + 1]["mIoU"] > results[peak]["mIoU"]:
            peak += 1
        report["best"] = {"threshold": results[best]["threshold"], "mIoU": results[best]["mIoU"]}
        report["first_peak"] = {"threshold": results[peak]["threshold"], "mIoU": results[peak]["mIoU"]}
    return report


CONVENTION_NOTES = {
    "release": "WSSS releases' script: IoU = TP/(T+P-TP+1e-10) averaged over all {n} classes, "
               "a class absent from prediction and ground truth counting 0",
    "detectron2": "Detectron2: IoU averaged over the classes present in the ground truth",
    "mmseg": "MMSegmentation: IoU averaged over the classes present in prediction or ground truth",
}


def _value(value):
    return "   n/a" if value is None or np.isnan(value) else f"{value:6.2f}"


def format_report(report: Dict, class_names: Sequence[str]) -> str:
    """The report as text: the convention, the curve (if any), then the per-class table of the best
    (or only) result, with FP and FN."""
    lines = [f"Metric convention: {report['convention']} "
             f"({CONVENTION_NOTES[report['convention']].format(n=len(class_names))})."]
    if report["missing"]:
        lines.append(f"WARNING: {len(report['missing'])} images had NO prediction file and were scored as "
                     f"all-ignore predictions, e.g. {report['missing'][:_SHOWN]}.")
    results = report["results"]
    shown = results[0]
    if len(results) > 1:
        lines.append("threshold    mIoU      FP      FN")
        lines += [f"{r['threshold']:9.2f}  {_value(r['mIoU'])}  {_value(r['FP'])}  {_value(r['FN'])}" for r in results]
        best, peak = report["best"], report["first_peak"]
        lines.append(f"Best background threshold {best['threshold']:.2f}: mIoU {best['mIoU']:.2f}")
        if best["threshold"] in (results[0]["threshold"], results[-1]["threshold"]):
            lines.append("(the best is at an end of the sweep: the optimum may lie outside it; widen --curve)")
        if peak["threshold"] != best["threshold"]:
            lines.append(f"(the release's sweep stops at its first peak, threshold {peak['threshold']:.2f}: "
                         f"mIoU {peak['mIoU']:.2f})")
        shown = results[[r["threshold"] for r in results].index(best["threshold"])]
    title = "" if shown["threshold"] is None else f" at background threshold {shown['threshold']:.2f}"
    lines.append(f"Per-class IoU{title} [{report['convention']} convention]:")
    width = max(len(name) for name in class_names)
    cells = [f"{name:>{width}}: {_value(shown['IoU'][name])}" for name in class_names]
    lines += ["    ".join(cells[i:i + 3]) for i in range(0, len(cells), 3)]
    lines.append(f"{'mIoU':>{width}}: {_value(shown['mIoU'])}    {'FP':>{width}}: {_value(shown['FP'])}    "
                 f"{'FN':>{width}}: {_value(shown['FN'])}")
    return "\n".join(lines)


def write_report(report: Dict, path: str) -> None:
    """Write the report as JSON, atomically, in its own key order (NaN, which JSON lacks, as null)."""

    def clean(value):
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return None if isinstance(value, float) and np.isnan(value) else value

    save_json(clean(report), path, indent=2, sort_keys=False)
