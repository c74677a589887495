#!/usr/bin/env python
"""Time of tools/evaluate_predictions.py's scoring on a synthetic VOC train_aug-sized folder.

    python benchmarks/bench_evaluate_predictions.py [--images 10582] [--workers 0] [--root DIR] [--keep]

Writes ``--images`` synthetic images at VOC sizes (375x500, 500x375, 333x500; 21 classes, 1 or 2
foreground classes per image, about 1.5 on average): a label PNG with a thin ignore band along the
object borders, a CAM dictionary (``.npy``, float32 maps of the image's classes, as
``tools/export_pseudo_labels.py --kind cam-npy`` writes them) and a label-PNG prediction. Then times,
with ``--workers`` processes (0: every usable core):

* the 60-threshold curve (``--curve 0 60``) over the CAM dictionaries, in one pass;
* one threshold (``--threshold 0.4``) over the CAM dictionaries;
* the label PNGs (``--type png``);
* for scale, the releases' way of sweeping, one full pass per threshold with an arg-max over all classes
  and per-class sums, on the first ``--baseline-images`` images and 3 thresholds, extrapolated to the
  whole curve and folder with the same number of processes.

The folder (about 1.1 MB per image, 12 GB for 10,582) is removed afterwards unless ``--keep``; an
existing complete folder under ``--root`` is reused.
"""
import argparse
import multiprocessing
import os
import shutil
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

from cdam_d2.data.cam_io import read_cam_dict, save_cam_dict
from cdam_d2.data.label_io import read_label_map
from cdam_d2.evaluation.prediction_folder import GroundTruth, curve_thresholds, folder_metrics, score_folder
from cdam_d2.utils.cores import available_cores

NUM_CLASSES = 21
SIZES = ((375, 500), (500, 375), (333, 500))


def make_image(task):
    """Write image ``index``'s label PNG, CAM dictionary and label-PNG prediction."""
    root, index = task
    image_id = f"{index:06d}"
    rng = np.random.default_rng(index)
    height, width = SIZES[index % len(SIZES)]
    classes = rng.choice(NUM_CLASSES - 1, size=1 + int(rng.random() < 0.5), replace=False)
    gt = np.zeros((height, width), np.uint8)
    cams = {}
    for order, key in enumerate(classes):
        # a smooth blob per class: the label where it is high, the CAM a noisy, blurred view of it
        coarse = rng.random((height // 60 + 2, width // 60 + 2)).astype(np.float32)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        gt[field > 0.6 + 0.1 * order] = key + 1
        noise = cv2.resize(rng.random((height // 16, width // 16)).astype(np.float32), (width, height))
        cam = np.clip(0.7 * field + 0.3 * noise, 0, None)
        cams[int(key)] = (cam - cam.min()) / (cam.max() - cam.min() + 1e-5)
    border = cv2.morphologyEx(gt, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    gt[border] = 255
    prediction = np.where(rng.random((height, width)) < 0.9, gt, 0).astype(np.uint8)
    Image.fromarray(gt).save(os.path.join(root, "labels", image_id + ".png"))
    Image.fromarray(prediction).save(os.path.join(root, "png", image_id + ".png"))
    save_cam_dict(cams, os.path.join(root, "npy", image_id + ".npy"))
    return image_id


def make_folder(root, images, workers):
    for name in ("labels", "png", "npy"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    done = len([n for n in os.listdir(os.path.join(root, "npy")) if n.endswith(".npy")])
    if done >= images:
        print(f"reusing {root} ({done} images)")
    else:
        start = time.perf_counter()
        with multiprocessing.Pool(workers) as pool:
            pool.map(make_image, [(root, index) for index in range(images)], chunksize=64)
        print(f"wrote {images} synthetic images to {root} in {time.perf_counter() - start:.0f} s")
    return [GroundTruth(f"{index:06d}", os.path.join(root, "labels", f"{index:06d}.png")) for index in range(images)]


def release_style_pass(task):
    """Per-class P, T, TP of one image at one threshold, the releases' way: a (C, H, W) stack, arg-max,
    then three masked sums per class."""
    npy_path, label_path, threshold = task
    cams = read_cam_dict(npy_path)
    gt = read_label_map(label_path)
    stack = np.zeros((NUM_CLASSES, *gt.shape), np.float32)
    for key, cam in cams.items():
        stack[key + 1] = cam
    stack[0] = threshold
    predict = stack.argmax(axis=0)
    valid = gt < 255
    correct = (predict == gt) & valid
    return np.array([[np.sum((predict == c) & valid), np.sum((gt == c) & valid), np.sum((gt == c) & correct)]
                     for c in range(NUM_CLASSES)])


def time_call(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10582)
    parser.add_argument("--workers", type=int, default=0, help="processes (0: every usable core)")
    parser.add_argument("--baseline-images", type=int, default=200)
    parser.add_argument("--root", help="folder for the synthetic data (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic folder")
    args = parser.parse_args()
    workers = args.workers or available_cores()
    root = args.root or tempfile.mkdtemp(prefix="bench_evaluate_predictions_")
    names = ["background"] + [f"class{k}" for k in range(1, NUM_CLASSES)]
    print(f"cores usable: {available_cores()}, worker processes: {workers}, load average before: "
          f"{os.getloadavg()[0]:.1f}")
    try:
        items = make_folder(root, args.images, workers)
        npy, png = os.path.join(root, "npy"), os.path.join(root, "png")
        score_args = dict(num_classes=NUM_CLASSES, ignore_label=255, workers=workers, progress=False)
        thresholds = curve_thresholds(0, 60)
        curve, seconds = time_call(lambda: score_folder(items, npy, "npy", thresholds=thresholds, **score_args))
        best = folder_metrics(curve, names)["best"]
        print(f"curve of {len(thresholds)} thresholds, {len(items)} CAM dictionaries: {seconds:.1f} s "
              f"({len(items) / seconds:.0f} images/s; best threshold {best['threshold']:.2f}, mIoU {best['mIoU']:.2f})")
        _, seconds = time_call(lambda: score_folder(items, npy, "npy", thresholds=[0.4], **score_args))
        print(f"one threshold, {len(items)} CAM dictionaries: {seconds:.1f} s ({len(items) / seconds:.0f} images/s)")
        _, seconds = time_call(lambda: score_folder(items, png, "png", **score_args))
        print(f"{len(items)} label PNGs: {seconds:.1f} s ({len(items) / seconds:.0f} images/s)")

        sample = items[:args.baseline_images]
        tasks = [(os.path.join(npy, item.image_id + ".npy"), item.label_path, t) for t in (0.3, 0.4, 0.5)
                 for item in sample]
        with multiprocessing.Pool(workers) as pool:
            _, seconds = time_call(lambda: pool.map(release_style_pass, tasks, chunksize=8))
        per_pass = seconds / len(tasks)
        estimate = per_pass * len(thresholds) * len(items)
        print(f"load average after: {os.getloadavg()[0]:.1f} (other processes slow every figure above)")
        print(f"releases' way (one pass per threshold), measured on {len(sample)} images x 3 thresholds: "
              f"{len(tasks) / seconds:.0f} image-thresholds/s -> about {estimate / 60:.0f} min "
              f"({estimate / 3600:.1f} h) for the {len(thresholds)}-threshold curve of {len(items)} images "
              f"with {workers} processes")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
