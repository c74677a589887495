#!/usr/bin/env python
"""Per-image time of cdam_d2's SemSegEvaluator vs Detectron2's, on random 21-class predictions.

    python benchmarks/bench_evaluator.py [--images 50] [--size 375 500] [--classes 21] [--rounds 3]

Both evaluate the same files with their default options (Detectron2 computes boundary IoU and
RLE-encodes predictions by default; cdam_d2 does neither unless asked). The two evaluators take
turns for several rounds, so that load from other processes hits both; every round is printed
and the ratio is taken between the best rounds, as ``timeit`` does.
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator as D2SemSegEvaluator
from PIL import Image

from cdam_d2.evaluation import SemSegEvaluator


def make_dataset(root, num_images, height, width, num_classes):
    rng = np.random.default_rng(0)
    records, predictions = [], []
    for index in range(num_images):
        gt = rng.integers(0, num_classes, size=(height, width)).astype(np.uint8)
        gt[rng.random((height, width)) < 0.05] = 255
        path = os.path.join(root, f"{index}.png")
        Image.fromarray(gt).save(path)
        records.append({"file_name": f"{index}.jpg", "sem_seg_file_name": path})
        predictions.append(torch.rand(num_classes, height, width))
    return records, predictions


def time_per_image(evaluator, records, predictions):
    evaluator.reset()
    start = time.perf_counter()
    for record, scores in zip(records, predictions):
        evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": scores}])
    result = evaluator.evaluate()
    return (time.perf_counter() - start) / len(records), result["sem_seg"]["mIoU"]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        records, predictions = make_dataset(root, args.images, *args.size, args.classes)
        name = "cdam_bench_evaluator"
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(
            stuff_classes=[str(i) for i in range(args.classes)], ignore_label=255
        )
        ours_eval = SemSegEvaluator(name, distributed=False)
        theirs_eval = D2SemSegEvaluator(name, distributed=False)
        ours, theirs = [], []
        for _ in range(args.rounds):
            seconds, ours_miou = time_per_image(ours_eval, records, predictions)
            ours.append(seconds)
            seconds, theirs_miou = time_per_image(theirs_eval, records, predictions)
            theirs.append(seconds)
            assert ours_miou == theirs_miou, (ours_miou, theirs_miou)
    print(f"{args.images} images of {args.size[0]}x{args.size[1]}, {args.classes} classes, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds")
    rounds = lambda times: ", ".join(f"{1000 * t:.2f}" for t in times)
    print(f"detectron2 SemSegEvaluator: {rounds(theirs)} ms/image")
    print(f"cdam_d2 SemSegEvaluator:    {rounds(ours)} ms/image")
    print(f"best rounds: {1000 * min(theirs):.2f} vs {1000 * min(ours):.2f} ms/image, "
          f"{min(theirs) / min(ours):.1f}x faster")
    print(f"mIoU identical: {ours_miou:.4f}")


if __name__ == "__main__":
    main()
