#!/usr/bin/env python
"""ClusterCAM benchmark: training iteration time / peak memory, the training step against the
released code, and the dense-CRF workers (throughput, memory, time to an error when one dies).

    python benchmarks/bench_clustercam.py                      # CPU, full DeiT-S, batch 2 at 448x448
    python benchmarks/bench_clustercam.py --device cuda --batch 9
    python benchmarks/bench_clustercam.py --release-dir /path/to/DCVL-WSSS/ClusterCAM --only release

``--release-dir``: a local checkout of the released code (github.com/DCVL-WSSS/ClusterCAM; not part
of this package). Its model and ``engine.train_one_epoch`` run as they are, with CPU stand-ins for
``torch.cuda.synchronize`` and stubs for two unused imports (einops, sklearn). Both training steps
take turns in one process over ``--rounds`` rounds, on the same batch; the ratio is ours / released
per round (best round and range).

Training: the ``ClusterCAM`` meta-architecture from configs/Base-ClusterCAM.yaml with random weights,
one AdamW step per iteration, in the classification phase (no pseudo-labels) and in the segmentation
phase (multi-scale CAMs + PAR + decoder). Each phase runs in a fresh process so its peak memory
(CUDA: max allocated; CPU: peak RSS of the process) is its own. AMP follows the config on CUDA.
Inference: 5-scale decoder inference of one 375x500 image. CRF: 375x500 images with 21 labels,
10 mean-field iterations, with 1 worker and with N workers.
"""
import argparse
import contextlib
import io
import itertools
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import types

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

    from cdam_d2.clustercam.solver import build_clustercam_optimizer

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
    from cdam_d2.clustercam.modeling import CRFParams, CRFWorkerPool, DenseCRFPostProcessor

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(num_images)]
    probs = [rng.random((21, 375, 500), dtype=np.float32) for _ in range(num_images)]
    with CRFWorkerPool(workers) as pool:
        crf = DenseCRFPostProcessor(CRFParams(), pool if workers > 1 else None)
        crf(images[:workers], probs[:workers])  # start the workers before timing
        start = time.perf_counter()
        crf(images, probs)
        return num_images / (time.perf_counter() - start)


def memory_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _package_crf_job(args):
    from cdam_d2.clustercam.modeling import dense_crf

    return dense_crf(*args).shape


def crf_worker_memory():
    """RSS of a pool worker (idle after one CRF; peak during a 375x500x21 CRF), of a worker started
    the previous way (multiprocessing spawn importing the package), and the same CRF in a bare
    interpreter (numpy + pydensecrf only: its inputs, then its peak), all in MiB."""
    import subprocess

    from cdam_d2.clustercam.modeling import CRFParams, CRFWorkerPool

    rng = np.random.default_rng(0)
    image, probs = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8), rng.random((21, 375, 500), dtype=np.float32)
    with CRFWorkerPool(1) as pool:
        pool.map([image[:32, :32]], [probs[:, :32, :32]], CRFParams(num_iters=1))
        (pid,) = pool.pids()
        idle = memory_kib(pid, "VmRSS")
        pool.map([image], [probs], CRFParams())
        peak = memory_kib(pid, "VmHWM")
    with multiprocessing.get_context("spawn").Pool(1) as old_pool:
        old_pool.map(_package_crf_job, [(image[:32, :32], probs[:, :32, :32], CRFParams(num_iters=1))])
        (old_pid,) = [p.pid for p in multiprocessing.active_children()]
        old_idle = memory_kib(old_pid, "VmRSS")
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size (fork), even after exec.
    script = ("import numpy as np; from crf_worker import dense_crf; "
              "hwm = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')); "
              "r = np.random.default_rng(0); i = r.integers(0, 256, (375, 500, 3), dtype=np.uint8); "
              "p = r.random((21, 375, 500), dtype=np.float32); before = hwm(); dense_crf(i, p); print(before, hwm())")
    out = subprocess.run([sys.executable, "-c", script], cwd=os.path.join(REPO, "cdam_d2", "modeling", "clustercam"),
                         capture_output=True, text=True, check=True).stdout.split()
    bare_before, bare_peak = (int(v) for v in out)
    return {"idle": idle / 1024, "peak": peak / 1024, "previous design idle": old_idle / 1024,
            "bare interpreter before CRF": bare_before / 1024, "bare interpreter peak": bare_peak / 1024}


def time_to_error_after_kill(workers=2):
    """Seconds from SIGKILL of a busy worker to the CRFWorkerError in the caller."""
    from cdam_d2.clustercam.modeling import CRFParams, CRFWorkerError, CRFWorkerPool

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)] * (2 * workers)
    probs = [rng.random((21, 375, 500), dtype=np.float32)] * (2 * workers)
    pool = CRFWorkerPool(workers)
    pool.map([i[:8, :8] for i in images[:workers]], [p[:, :8, :8] for p in probs[:workers]], CRFParams(num_iters=1))
    killed_at = []

    def kill():
        killed_at.append(time.perf_counter())
        os.kill(pool.pids()[0], signal.SIGKILL)

    timer = threading.Timer(1.0, kill)
    timer.start()
    try:
        pool.map(images, probs, CRFParams())
    except CRFWorkerError:
        return time.perf_counter() - killed_at[0]
    finally:
        timer.join()
        pool.close()
    raise RuntimeError("the pool finished before the kill; use larger images")


# ----------------------------------------------------------------------------- released training step
def stub_module(name, **attributes):
    """An empty module registered as ``name``, with a spec (torch looks modules up by spec)."""
    from importlib.machinery import ModuleSpec

    module = types.ModuleType(name)
    module.__spec__ = ModuleSpec(name, None)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def load_release(release_dir):
    """Import the released ``models``, ``engine`` and ``PAR`` modules from ``release_dir``."""
    import importlib.util

    sys.path.insert(0, os.path.abspath(release_dir))
    # einops is imported and never used; sklearn only serves the in-training mAP.
    if importlib.util.find_spec("einops") is None:
        stub_module("einops")
    if importlib.util.find_spec("sklearn") is None:
        stub_module("sklearn", metrics=stub_module("sklearn.metrics", average_precision_score=None))
    import PAR
    import engine
    import models

    return models, engine, PAR


def training_batch(batch, size):
    generator = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator),
             "image_labels": [1, 15]} for _ in range(batch)]


class OurStep:
    """This package's training iteration: Detectron2's SimpleTrainer step over the meta-architecture."""

    def __init__(self, device, config, inputs, seg_phase):
        from detectron2.engine import SimpleTrainer

        from cdam_d2.clustercam.solver import build_clustercam_optimizer

        torch.manual_seed(0)
        cfg, self.model = build(device, config)
        self.model.train()
        self.model.seg_start_iter = 0 if seg_phase else 10 ** 9
        self.trainer = SimpleTrainer(self.model, itertools.repeat(inputs), build_clustercam_optimizer(cfg, self.model))

    def __call__(self, iters):
        self.trainer.train(0, iters)


class ReleasedStep:
    """The release's iteration: ``engine.train_one_epoch`` over the same batch, normalised as its
    data loader does (the loader's RandomErasing is not timed; ours runs in the model and is)."""

    def __init__(self, release, inputs, seg_phase, num_classes=20):
        from timm.optim import create_optimizer_v2
        from timm.utils import NativeScaler

        models, self.engine, par_module = release
        torch.manual_seed(0)
        model = models.deit_small_MCTformerV2_patch16_224(
            pretrained=False, num_classes=num_classes, drop_rate=0.0, drop_path_rate=0.1, st_attn_depth=12)
        self.model = torch.nn.DataParallel(model)  # as released; a pass-through without GPUs
        self.optimizer = create_optimizer_v2(self.model, opt="adamw", lr=5e-4 * 9 / 512, weight_decay=0.05)
        self.scaler = NativeScaler()
        self.par = par_module.PAR(num_iter=10, dilations=[1, 2, 4, 8, 12, 24])
        mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
        std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
        self.samples = torch.stack([(x["image"].float() - mean) / std for x in inputs])
        self.targets = torch.zeros(len(inputs), num_classes)
        for row, x in enumerate(inputs):
            self.targets[row, [i - 1 for i in x["image_labels"]]] = 1
        self.skip_seg = not seg_phase

    def __call__(self, iters):
        synchronize = torch.cuda.synchronize
        torch.cuda.synchronize = lambda *args, **kwargs: None
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                self.engine.train_one_epoch(
                    self.model, [(self.samples, self.targets)] * iters, self.optimizer, torch.device("cpu"), 0,
                    self.scaler, 0, True, scales=[1.0, 0.75, 1.25], bg_thr=0.4, par=self.par,
                    skip_seg=self.skip_seg, ignore_delta=0.1)
        finally:
            torch.cuda.synchronize = synchronize


def compare_with_release(args):
    """Per phase: (our seconds per round, released seconds per round)."""
    release = load_release(args.release_dir)
    inputs = training_batch(args.batch, args.size)
    results = {}
    for seg_phase in (False, True):
        steps = {"ours": OurStep(args.device, args.config, inputs, seg_phase),
                 "released": ReleasedStep(release, inputs, seg_phase)}
        for step in steps.values():
            step(1)  # warm-up
        times = {name: [] for name in steps}
        for round_index in range(args.rounds):
            order = list(steps) if round_index % 2 == 0 else list(reversed(list(steps)))
            for name in order:
                start = time.perf_counter()
                steps[name](args.iters)
                times[name].append((time.perf_counter() - start) / args.iters)
        results[seg_phase] = times
        del steps
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="clustercam_voc.yaml")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--iters", type=int, default=1, help="timed iterations per round (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crf-images", type=int, default=8)
    parser.add_argument("--crf-workers", type=int, default=os.cpu_count())
    parser.add_argument("--release-dir", default="", help="local checkout of the released code")
    parser.add_argument("--only", choices=["all", "train", "release", "crf"], default="all")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); on a "
                        "busy shared machine 1 thread avoids the slowdown of oversubscribed thread pools")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the fresh processes

    print(f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} cores, threads {torch.get_num_threads()}")
    print("| measurement | value |")
    print("|---|---|")
    if args.only in ("all", "train"):
        for seg_phase in (False, True):
            seconds, peak = in_fresh_process(train_phase, args.device, args.config, args.batch, args.size,
                                             seg_phase, args.iters + 1)
            phase = "seg phase (pseudo-labels + decoder)" if seg_phase else "cls phase"
            print(f"| train iteration, {phase}, batch {args.batch} @ {args.size}² | {seconds:.2f} s, peak {peak:.0f} MiB |")
        seconds, peak = in_fresh_process(inference_latency, args.device, args.config)
        print(f"| inference 375×500, 5 scales, no CRF | {seconds:.2f} s/image, peak {peak:.0f} MiB |")
    if args.only in ("all", "release") and args.release_dir:
        for seg_phase, times in compare_with_release(args).items():
            phase = "seg phase" if seg_phase else "cls phase"
            ours, released = times["ours"], times["released"]
            ratios = [a / b for a, b in zip(ours, released)]
            print(f"| train iteration vs release, {phase}, batch {args.batch} @ {args.size}², {args.rounds} rounds | "
                  f"ours {min(ours):.2f} s (rounds {min(ours):.2f}-{max(ours):.2f}), released {min(released):.2f} s "
                  f"({min(released):.2f}-{max(released):.2f}); ratio of best rounds {min(ours) / min(released):.2f}, "
                  f"per round {min(ratios):.2f}-{max(ratios):.2f} |")
    if args.only in ("all", "crf"):
        for workers in sorted({1, args.crf_workers}):
            rate = crf_throughput(args.crf_images, workers)
            print(f"| dense CRF 375×500, 21 labels, 10 iters, {workers} worker(s) | {rate:.2f} images/s |")
        memory = crf_worker_memory()
        print(f"| CRF worker RSS (numpy + pydensecrf only) | idle {memory['idle']:.0f} MiB, peak during a "
              f"375×500×21 CRF {memory['peak']:.0f} MiB |")
        print(f"| the same CRF in a bare interpreter (numpy + pydensecrf) | {memory['bare interpreter before CRF']:.0f} "
              f"MiB with its inputs, peak {memory['bare interpreter peak']:.0f} MiB |")
        print(f"| previous design: spawn worker importing the package | idle {memory['previous design idle']:.0f} MiB |")
        print(f"| SIGKILL of a busy CRF worker -> CRFWorkerError in the caller | {time_to_error_after_kill():.3f} s |")


if __name__ == "__main__":
    main()
