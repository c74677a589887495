#!/usr/bin/env python
"""Latency and peak memory of CDAM inference on one 448x597 image (2 windows), ViT-B/16 random weights.

Rows: the base pass alone (MaskCLIP first pass), base + CDAM (this package), and a naive implementation in
the released style (windows one at a time, KL-pair JS on materialised Q x N x N tensors, softmax + min-max,
a per-head (N+1) x (N+1) buffer with one matmul per head). Also the CDAM map alone (fast vs naive).
Latency: best of --repeats, all rows interleaved in one process (so load changes hit all rows alike).
Peak memory: one call per row in a fresh process; CUDA max_memory_allocated on GPU; on CPU the peak resident
set size sampled every millisecond during the call, minus the size before it ("extra"), and the process total
(glibc is told to return every allocation of 64 KiB or more on free, so the RSS follows the live tensors).

    python benchmarks/bench_cdam.py [--device cpu|cuda] [--repeats 3]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F

HEIGHT, WIDTH = 448, 597
NUM_DATASET, NUM_ATP = 21, 80
ROWS = ("base", "base+cdam", "naive released-style", "cdam map (fast)", "cdam map (naive)")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread while active."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())


def naive_js(probs):
    """(Q, N) -> (N, N): the released KL-pair form on broadcast Q x N x N tensors."""
    p_i, p_j = probs[:, :, None], probs[:, None, :]
    mid = (p_i + p_j) / 2
    return (0.5 * (p_i * (torch.log(p_i + 1e-8) - torch.log(mid + 1e-8))).sum(0)
            + 0.5 * (p_j * (torch.log(p_j + 1e-8) - torch.log(mid + 1e-8))).sum(0))


def naive_normalize(divergence, sharpen=0.1):
    sim = 1 - divergence
    sim = (sim - sim.min(1, keepdim=True)[0]) / (sim.max(1, keepdim=True)[0] - sim.min(1, keepdim=True)[0] + 1e-8)
    attn = torch.softmax(sim / sharpen, dim=1)
    return (attn - attn.min(1, keepdim=True)[0]) / (attn.max(1, keepdim=True)[0] - attn.min(1, keepdim=True)[0] + 1e-8)


def naive_map(logits, scales=(0.25, 0.37, 0.5, 0.63, 0.75, 0.87)):
    """(Q, g_h, g_w) -> (N, N) W, one window, released order of operations (fp32)."""
    grid = logits.shape[-2:]
    num = grid[0] * grid[1]
    total = naive_normalize(naive_js(torch.softmax(logits.flatten(1) / 0.1, 0)))
    for scale in scales:
        small = (int(grid[0] * scale), int(grid[1] * scale))
        small_logits = F.interpolate(logits[None], size=small, mode="bilinear", align_corners=False)[0]
        js = naive_js(torch.softmax(small_logits.flatten(1) / 0.1, 0))
        keys = F.interpolate(js.reshape(1, -1, *small), size=grid, mode="bilinear", align_corners=False)
        keys = keys.reshape(-1, num).t().reshape(1, num, *small)
        full = F.interpolate(keys, size=grid, mode="bilinear", align_corners=False).reshape(num, num).t()
        total = total + naive_normalize(full)
    return total / (1 + len(scales))


def naive_segment(segmentor, image, text):
    """Released-style pipeline: sequential windows, per-head buffer; returns merged logits."""
    from cdam_d2.modeling.cdam.sliding_window import window_boxes

    encoder = segmentor.encoder
    block = encoder.blocks[-1]
    heads = encoder.num_heads
    boxes = window_boxes(HEIGHT, WIDTH, 448, 224)
    canvas = torch.zeros(NUM_DATASET, HEIGHT, WIDTH, device=image.device)
    count = torch.zeros(1, HEIGHT, WIDTH, device=image.device)
    all_text = torch.cat([text.dataset, text.extra])
    for y1, y2, x1, x2 in boxes:
        state = encoder.forward_to_last_block(image[None, :, y1:y2, x1:x2])
        first = encoder.first_pass(state)[0]
        weights = naive_map((first @ all_text.t()).t().reshape(-1, *state.grid))
        tokens = state.tokens[0]
        buffer = torch.zeros(heads, tokens.shape[0], tokens.shape[0], device=image.device)
        buffer[:, 1:, 1:] = weights
        values = encoder._value(block, block.ln_1(tokens)).reshape(tokens.shape[0], heads, -1)
        attended = torch.cat([buffer[h] @ values[:, h] for h in range(heads)], dim=1)
        hidden = tokens + block.attn.out_proj(attended)
        hidden = hidden + block.mlp(block.ln_2(hidden))
        logits = encoder.project(hidden[None])[0] @ text.dataset.t()
        logits = logits.t().reshape(1, NUM_DATASET, *state.grid)
        canvas[:, y1:y2, x1:x2] += F.interpolate(logits, size=(y2 - y1, x2 - x1), mode="bilinear")[0]
        count[:, y1:y2, x1:x2] += 1
    return canvas / count


def build_calls(device):
    """One callable per row, sharing one random ViT-B/16 and random text embeddings."""
    from cdam_d2.modeling.cdam import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip, cdam_attention

    torch.manual_seed(0)
    visual = build_clip("ViT-B-16", "random")[0].visual.to(device).eval()
    base = CDAMSegmentor(DenseCLIPEncoder(visual), use_cdam=False)
    cdam = CDAMSegmentor(DenseCLIPEncoder(visual))
    embed_dim = visual.output_dim
    text = TextQueries(F.normalize(torch.randn(NUM_DATASET, embed_dim, device=device), dim=-1),
                       F.normalize(torch.randn(NUM_ATP, embed_dim, device=device), dim=-1),
                       tuple(range(NUM_DATASET)), NUM_DATASET)
    image = torch.randn(3, HEIGHT, WIDTH, device=device)
    map_logits = 0.05 * torch.randn(2, NUM_DATASET + NUM_ATP, 28, 28, device=device)
    return {
        "base": lambda: base(image, (375, 500), text),
        "base+cdam": lambda: cdam(image, (375, 500), text),
        "naive released-style": lambda: naive_segment(cdam, image, text),
        "cdam map (fast)": lambda: cdam_attention(map_logits),
        "cdam map (naive)": lambda: [naive_map(window) for window in map_logits],
    }


@torch.no_grad()
def measure_memory(row, device):
    """Peak memory of one call of ``row`` in this (fresh) process, in MiB: (extra over before, total)."""
    call = build_calls(device)[row]
    if device == "cuda":
        call()  # warm-up (kernels, allocator)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2 ** 20, torch.cuda.max_memory_allocated() / 2 ** 20
    with PeakRSS() as peak:  # first call: nothing cached by the allocator yet
        call()
    return (peak.peak - peak.start) / 2 ** 20, peak.peak / 2 ** 20


@torch.no_grad()
def measure_latency(device, repeats):
    """Best-of-``repeats`` seconds per row; rows interleaved so that load changes hit all rows alike."""
    calls = build_calls(device)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for call in calls.values():
        call()  # warm-up
    times = {row: [] for row in calls}
    for _ in range(repeats):
        for row, call in calls.items():
            synchronize()
            start = time.perf_counter()
            call()
            synchronize()
            times[row].append(time.perf_counter() - start)
    return {row: min(values) for row, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-row", choices=ROWS, help=argparse.SUPPRESS)  # internal: one row per process
    args = parser.parse_args()
    if args.memory_row:
        print(json.dumps(measure_memory(args.memory_row, args.device)))
        return
    memory = {}
    for row in ROWS:
        # glibc: allocations >= 64 KiB are mmap-ed and returned on free, so the RSS follows live tensors
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        done = subprocess.run([sys.executable, __file__, "--device", args.device, "--memory-row", row],
                              capture_output=True, text=True, check=True, env=env)
        memory[row] = json.loads(done.stdout.strip().splitlines()[-1])
    latency = measure_latency(args.device, args.repeats)
    print(f"device: {args.device}, threads: {torch.get_num_threads()}, image {HEIGHT}x{WIDTH} (2 windows), "
          f"ViT-B/16, Q = {NUM_DATASET} + {NUM_ATP} ATP, best of {args.repeats} (rows interleaved), "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| row | latency per image (s) | peak extra memory (MiB) | peak total (MiB) |")
    print("|---|---|---|---|")
    for row in ROWS:
        print(f"| {row} | {latency[row]:.3f} | {memory[row][0]:.0f} | {memory[row][1]:.0f} |")
    print(f"CDAM overhead over the base pass: {100 * (latency['base+cdam'] / latency['base'] - 1):.1f}%")
    print(f"full pipeline, naive / this: {latency['naive released-style'] / latency['base+cdam']:.2f}x time, "
          f"{memory['naive released-style'][0] / memory['base+cdam'][0]:.2f}x extra memory")
    print(f"CDAM map alone, naive / this: {latency['cdam map (naive)'] / latency['cdam map (fast)']:.2f}x time, "
          f"{memory['cdam map (naive)'][0] / memory['cdam map (fast)'][0]:.2f}x extra memory")

if __name__ == "__main__":
    main()
