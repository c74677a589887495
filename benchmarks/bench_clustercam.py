#!/usr/bin/env python
"""ClusterCAM benchmark: training iteration time / peak memory and dense-CRF throughput.

    python benchmarks/bench_clustercam.py                      # CPU, full DeiT-S, batch 2 at 448x448
    python benchmarks/bench_clustercam.py --device cuda --batch 9

Training: the ``ClusterCAM`` meta-architecture from configs/Base-ClusterCAM.yaml with random weights,
one AdamW step per iteration, in the classification phase (no pseudo-labels) and in the segmentation
phase (multi-scale CAMs + PAR + decoder). Each phase runs in a fresh process so its peak memory
(CUDA: max allocated; CPU: peak RSS of the process) is its own. AMP follows the config on CUDA.
Inference: 5-scale decoder inference of one 375x500 image. CRF: 375x500 images with 21 labels,
10 mean-field iterations, with 1 worker and with N workers.
"""
import argparse
import multiprocessing
import os
import resource
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build(device, config):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from cdam_d2 import add_cdam_config

    cfg = get_cfg()
    add_cdam_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", config))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.CLUSTERCAM.PRETRAINED", ""])
    return cfg, build_model(cfg)


def peak_memory_mib(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train_phase(device, config, batch, size, seg_phase, iters, queue):
    from detectron2.utils.events import EventStorage

    from cdam_d2.solver import build_clustercam_optimizer

    torch.manual_seed(0)
    cfg, model = build(device, config)
    model.train()
    model.seg_start_iter = 0 if seg_phase else 10 ** 9
    optimizer = build_clustercam_optimizer(cfg, model)
    use_amp = device.startswith("cuda") and cfg.SOLVER.AMP.ENABLED
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    inputs = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8), "image_labels": [1, 15]}
              for _ in range(batch)]
    times = []
    with EventStorage(0) as storage:
        for step in range(iters + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device_type=torch.device(device).type, enabled=use_amp):
                losses = model(inputs)
            optimizer.zero_grad()
            scaler.scale(sum(losses.values())).backward()
            scaler.step(optimizer)
            scaler.update()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            storage.iter = step + 1
    queue.put((float(np.mean(times[1:])), peak_memory_mib(device)))


def inference_latency(device, config, queue):
    torch.manual_seed(0)
    cfg, model = build(device, config)
    model.eval()
    model.crf = None
    inputs = [{"image": torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8), "height": 375, "width": 500}]
    times = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            model(inputs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    queue.put((float(np.mean(times[1:])), peak_memory_mib(device)))


def in_fresh_process(target, *args):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def crf_throughput(num_images, workers):
    from cdam_d2.modeling.clustercam import DenseCRFPostProcessor

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(num_images)]
    probs = [rng.random((21, 375, 500), dtype=np.float32) for _ in range(num_images)]
    crf = DenseCRFPostProcessor(num_workers=workers)
    try:
        crf(images[:workers], probs[:workers])  # start the pool before timing
        start = time.perf_counter()
        crf(images, probs)
        return num_images / (time.perf_counter() - start)
    finally:
        crf.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="clustercam_voc.yaml")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--iters", type=int, default=2, help="timed iterations (after one warm-up)")
    parser.add_argument("--crf-images", type=int, default=8)
    parser.add_argument("--crf-workers", type=int, default=os.cpu_count())
    args = parser.parse_args()

    print(f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}")
    print("| measurement | value |")
    print("|---|---|")
    for seg_phase in (False, True):
        seconds, peak = in_fresh_process(train_phase, args.device, args.config, args.batch, args.size, seg_phase,
                                         args.iters)
        phase = "seg phase (pseudo-labels + decoder)" if seg_phase else "cls phase"
        print(f"| train iteration, {phase}, batch {args.batch} @ {args.size}² | {seconds:.2f} s, peak {peak:.0f} MiB |")
    seconds, peak = in_fresh_process(inference_latency, args.device, args.config)
    print(f"| inference 375×500, 5 scales, no CRF | {seconds:.2f} s/image, peak {peak:.0f} MiB |")
    for workers in sorted({1, args.crf_workers}):
        rate = crf_throughput(args.crf_images, workers)
        print(f"| dense CRF 375×500, 21 labels, 10 iters, {workers} worker(s) | {rate:.2f} images/s |")


if __name__ == "__main__":
    main()
