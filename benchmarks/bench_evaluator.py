#!/usr/bin/env python
"""Per-image time of cdam_d2's SemSegEvaluator vs Detectron2's, doing the same work.

    python benchmarks/bench_evaluator.py [--rounds 5] [--labels smooth|noise] [--threads 1 2]

Rows: 21 and 81 classes at 375x500 (VOC / COCO-Object size) and 19 classes at 1024x2048
(Cityscapes size), each at every thread count, with

* ``off``: confusion-matrix metrics only. Detectron2's evaluator cannot turn boundary IoU or RLE
  encoding off, so they are switched off in a subclass (``_compute_boundary_iou = False``, no
  ``encode_json_sem_seg``); cdam_d2 gets ``boundary_iou=False, write_predictions=False``.
* ``on``: boundary IoU and predictions JSON in both (Detectron2's defaults with an
  ``output_dir``; cdam_d2's defaults do the same).

Each image's scores are made just before ``process``, as a model's post-processing does
(bilinear upsampling of 1/32-resolution random logits of a few classes per image: 3 of VOC's
21, 4 of COCO-Object's 81, 12 of Cityscapes' 19), and only the evaluators' calls are timed.
``--labels smooth`` draws the label maps the same way (a perturbed copy of the same logits, with
a thin ignore band along class borders, as VOC's); ``noise`` uses i.i.d. random scores and labels
of every class, a worst case for PNG decoding and run-length encoding. Within each row the two
evaluators take turns over the rounds, so that load from other processes hits both; the ratio is
taken between their best rounds, as ``timeit`` does. Every round checks that the two agree on every
non-boundary metric and, with ``on``, that their JSON files are identical.
"""
import argparse
import math
import os
import tempfile
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator
from PIL import Image

from cdam_d2.evaluation import SemSegEvaluator

# classes, H, W, images, classes present per image: VOC, COCO-Object and Cityscapes sizes.
CASES = ((21, 375, 500, 30, 3), (81, 375, 500, 12, 4), (19, 1024, 2048, 3, 12))


class D2WithoutExtras(D2SemSegEvaluator):
    """Detectron2's evaluator with boundary IoU and RLE encoding switched off."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compute_boundary_iou = False

    def encode_json_sem_seg(self, sem_seg, input_file_name):
        return []


def make_scores(index, case, labels):
    """(C, H, W) float32 scores of image ``index`` and its (H, W) uint8 label map."""
    num_classes, height, width, _, present = case
    generator = torch.Generator().manual_seed(index)
    if labels == "noise":
        scores = torch.rand(num_classes, height, width, generator=generator)
        gt = torch.randint(0, num_classes, (height, width), generator=generator).to(torch.uint8)
        gt[torch.rand(height, width, generator=generator) < 0.05] = 255
        return scores, gt.numpy()
    classes = torch.randperm(num_classes, generator=generator)[:present]
    low = (present, math.ceil(height / 32), math.ceil(width / 32))
    logits = torch.randn(low, generator=generator)
    upsample = lambda x: F.interpolate(x[None], (height, width), mode="bilinear")[0]
    everything = torch.full((num_classes, *low[1:]), -10.0)  # absent classes score low
    everything[classes] = logits + 0.5 * torch.randn(low, generator=generator)
    scores = upsample(everything)
    truth = upsample(logits + 0.5 * torch.randn(low, generator=generator))
    top2 = truth.topk(2, dim=0).values
    gt = classes[truth.argmax(dim=0)].to(torch.uint8)
    gt[top2[0] - top2[1] < 0.05] = 255  # a thin ignore band along class borders, as in VOC
    return scores, gt.numpy()


def register(root, case, labels):
    num_classes, height, width, images, _ = case
    name = f"cdam_bench_evaluator_{num_classes}_{height}x{width}_{labels}"
    records = []
    for index in range(images):
        path = os.path.join(root, f"{name}_{index}.png")
        Image.fromarray(make_scores(index, case, labels)[1]).save(path)
        records.append({"file_name": f"{index}.jpg", "sem_seg_file_name": path})
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=[f"c{i}" for i in range(num_classes)], ignore_label=255
    )
    return name


def timed_round(evaluator, case, labels):
    """Wall and CPU seconds per image spent in ``process`` and ``evaluate``, and the results."""
    evaluator.reset()
    clocks = (time.perf_counter, time.process_time)  # CPU time: of all the process's threads
    spent = np.zeros(2)
    images = case[3]
    for index in range(images + 1):
        scores = make_scores(index, case, labels)[0] if index < images else None
        start = np.array([clock() for clock in clocks])
        if scores is None:
            results = evaluator.evaluate()["sem_seg"]
        else:
            evaluator.process([{"file_name": f"{index}.jpg"}], [{"sem_seg": scores}])
        spent += np.array([clock() for clock in clocks]) - start
    return spent / images, results


def check_agreement(ours, theirs, ours_dir, theirs_dir):
    for key, value in theirs.items():
        if "Boundary" in key or "B-Iou" in key:
            continue  # Detectron2's boundary matrix wraps around in uint8 from 16 classes up
        same = value == ours[key] or (math.isnan(value) and math.isnan(ours[key]))
        assert same, (key, value, ours[key])
    if ours_dir:
        files = [os.path.join(d, "sem_seg_predictions.json") for d in (ours_dir, theirs_dir)]
        contents = [open(path, "rb").read() for path in files]
        assert contents[0] == contents[1], "prediction JSON files differ"


def run_row(name, case, work, rounds, labels, root):
    if work == "on":
        ours_dir, theirs_dir = os.path.join(root, "ours"), os.path.join(root, "theirs")
        ours = SemSegEvaluator(name, distributed=False, output_dir=ours_dir,
                               boundary_iou=True, write_predictions=True)
        theirs = D2SemSegEvaluator(name, distributed=False, output_dir=theirs_dir)
    else:
        ours_dir = theirs_dir = None
        ours = SemSegEvaluator(name, distributed=False, boundary_iou=False,
                               write_predictions=False)
        theirs = D2WithoutExtras(name, distributed=False)
    ours_times, theirs_times = [], []
    for _ in range(rounds):
        seconds, theirs_res = timed_round(theirs, case, labels)
        theirs_times.append(seconds)
        seconds, ours_res = timed_round(ours, case, labels)
        ours_times.append(seconds)
        check_agreement(ours_res, theirs_res, ours_dir, theirs_dir)
    return np.array(theirs_times), np.array(ours_times)  # (rounds, [wall, CPU])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--labels", choices=("smooth", "noise"), default="smooth")
    parser.add_argument("--threads", type=int, nargs="+", default=(1, 2))
    parser.add_argument("--cases", type=int, nargs="+", default=range(len(CASES)),
                        help=f"indices into {CASES} (classes, H, W, images, present)")
    args = parser.parse_args()
    print(f"{args.labels} labels, {args.rounds} rounds alternating; wall ms per image over the "
          "rounds (best first); speed-up between best rounds, of wall and of CPU time")
    print("| size, classes (images) | threads | boundary IoU + JSON | Detectron2 | cdam_d2 "
          "| speed-up | speed-up, CPU time |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for case_index in args.cases:
            case = CASES[case_index]
            num_classes, height, width, images, _ = case
            name = register(root, case, args.labels)
            for threads in args.threads:
                torch.set_num_threads(threads)
                cv2.setNumThreads(threads)
                for work in ("off", "on"):
                    theirs, ours = run_row(name, case, work, args.rounds, args.labels, root)
                    wall = lambda t: f"{1000 * t[:, 0].min():.1f}–{1000 * t[:, 0].max():.1f}"
                    speed_up = theirs.min(axis=0) / ours.min(axis=0)
                    print(f"| {height}×{width}, {num_classes} ({images}) | {threads} | {work} "
                          f"| {wall(theirs)} | {wall(ours)} | {speed_up[0]:.1f}× "
                          f"| {speed_up[1]:.1f}× |", flush=True)
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


if __name__ == "__main__":
    main()
