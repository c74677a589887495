#!/usr/bin/env python
"""Peak memory and time of segmenting one large photo (default 4000x3000) with CDAM, ViT-B/16 random weights.

Rows, for the VOC (21 classes) and Context60 (60 classes) vocabularies:
- "whole map": ``CDAM.segment`` (the evaluation path, used by the previous tools/demo.py): all query logits
  upsampled to the photo at once, softmax, background encoding, then the arg-max;
- "predictor, labels": ``CDAMPredictor(image, probabilities=False)``, full-size work in bands of rows;
- "predictor, labels + probabilities": the same returning the (C, H, W) class probabilities;
- "demo step": the predictor plus the overlay with its legend and the label PNG, as tools/demo.py does.
Each row runs once in a fresh process (peak resident set size sampled every millisecond during the call, minus
the size before it; glibc returns allocations of 64 KiB or more on free, so the RSS follows live tensors).

    python benchmarks/bench_predictor.py [--size 3000 4000]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cdam import PeakRSS  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("whole map", "predictor, labels", "predictor, labels + probabilities", "demo step")
DATASETS = {21: "cdam_voc21_sem_seg_val", 60: "cdam_context60_sem_seg_val"}


@torch.no_grad()
def measure(row, classes, size):
    """(seconds, peak extra MiB, peak total MiB) of one call of ``row`` in this fresh process."""
    from cdam_d2.cdam.resize import resize_image
    from cdam_d2.engine.overlay import class_colors, render_overlay, save_label_png
    from cdam_d2.cdam.predictor import CDAMPredictor

    folder = tempfile.mkdtemp()
    templates = os.path.join(folder, "templates.txt")
    with open(templates, "w") as f:
        f.write("a photo of a {}.\n")  # text encoding is not what is measured here
    opts = ["MODEL.DEVICE", "cpu", "MODEL.CDAM.CLIP_WEIGHTS", "random", "MODEL.CDAM.TEMPLATES", templates,
            "MODEL.CDAM.TEXT_CACHE_DIR", ""]
    predictor = CDAMPredictor(os.path.join(REPO, "configs", "cdam_voc21.yaml"), dataset=DATASETS[classes],
                              opts=opts, input_format="RGB")
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    model, cfg = predictor.model, predictor.cfg

    def whole_map():
        resized = resize_image(image, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return model.segment(tensor, size[0], size[1], model.dataset_queries(DATASETS[classes])).argmax(0)

    def demo_step():
        result = predictor(image, probabilities=False)
        colors = class_colors(result.names)
        render_overlay(image, result.labels, result.names, 0.5, colors).save(os.path.join(folder, "overlay.png"))
        save_label_png(result.labels, os.path.join(folder, "labels.png"), colors)

    calls = {"whole map": whole_map,
             "predictor, labels": lambda: predictor(image, probabilities=False),
             "predictor, labels + probabilities": lambda: predictor(image),
             "demo step": demo_step}
    start = time.perf_counter()
    with PeakRSS() as peak:
        calls[row]()
    return time.perf_counter() - start, (peak.peak - peak.start) / 2 ** 20, peak.peak / 2 ** 20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(3000, 4000), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # internal: one row per process
    parser.add_argument("--classes", type=int, choices=sorted(DATASETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.row, args.classes, tuple(args.size))))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    print(f"{args.size[0]}x{args.size[1]} photo, ViT-B/16 random weights, CPU, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f}; one call per row in a fresh process")
    print("| classes | row | time (s) | peak extra memory (MiB) | peak process memory (MiB) |")
    print("|---|---|---|---|---|")
    for classes in sorted(DATASETS):
        for row in ROWS:
            done = subprocess.run([sys.executable, __file__, "--row", row, "--classes", str(classes), "--size",
                                   *map(str, args.size)], capture_output=True, text=True, env=env)
            if done.returncode:
                raise RuntimeError(done.stderr[-3000:])
            seconds, extra, total = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {classes} | {row} | {seconds:.1f} | {extra:.0f} | {total:.0f} |", flush=True)


if __name__ == "__main__":
    main()
