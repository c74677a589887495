#!/usr/bin/env python
"""CDAM inference time per image and per stage, next to the backbone's FLOP floor, at 1, 2 and 3 windows;
with ``--released-code``, the released implementation (janeyeon/CDAM-CLIP) on the same weights as a ratio.

Setup: ViT-B/16 with random weights (QuickGELU; weights rounded through fp16 as the release's ``clip.load``
does, so both implementations hold the same numbers), Q = 21 VOC + 80 ATP random unit text embeddings, random
normalized images of 448x448 (1 window), 448x597 (2) and 448x673 (3), output sizes 375x375, 375x500, 333x500.

Stages (this package; ``CDAMSegmentor.stage_timer``, the device synchronised): backbone (patch embedding, blocks
1..L-1, the base's first pass of the last block), CDAM map, second pass, post-processing (threshold, window
merge, resize to the output size, probabilities). The FLOP floor is the backbone's multiply-add count divided
by the machine's sustained GEMM rate (best of a few 4096^2 matmuls in the backbone's dtype). Every round runs
the compared rows back to back; the best round of each row is reported, with the range over rounds.

The released code needs mmseg; only its segmentor, CLIP and PAMR modules are used, with mmseg / mmengine
replaced by minimal stand-ins defined here (a base ``nn.Module``, a registry decorator, a pixel-data dict).
Its CPU path allocates its attention buffer in fp16, which the fp32 CPU model cannot multiply (the released
CPU path fails with a dtype error); the benchmark hands it an fp32 one.

``--precision`` is this package's backbone precision (``MODEL.CDAM.PRECISION`` on CUDA, default fp16;
``MODEL.CDAM.CPU_PRECISION`` on CPU, default fp32, or bf16). The released code runs in its own precision
(fp16 on CUDA, fp32 on CPU) unless ``--released-autocast`` runs it under the same autocast.

    python benchmarks/bench_cdam.py [--device cpu|cuda] [--precision fp32|fp16|bf16] [--threads N] [--rounds 3]
                                    [--released-code /path/to/CDAM-CLIP] [--released-autocast] [--memory]
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip  # noqa: E402
from cdam_d2.cdam.modeling.segmentor import STAGES  # noqa: E402
from cdam_d2.cdam.modeling.vocabulary import atp_words, read_class_names_file  # noqa: E402

NUM_DATASET, NUM_ATP = 21, 80
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CASES = {1: ((448, 448), (375, 375)), 2: ((448, 597), (375, 500)), 3: ((448, 673), (333, 500))}


# ---- the model, the inputs and the released implementation ----------------------------------------------
def build_model(device):
    """Random ViT-B/16 (QuickGELU) whose weights are exactly representable in fp16, and random text."""
    import open_clip

    model = build_clip("ViT-B-16", "random", force_quick_gelu=True)[0]
    open_clip.model.convert_weights_to_lp(model)  # what the release's clip.load does before .float() on CPU
    model = model.float().to(device).eval()
    generator = torch.Generator().manual_seed(0)
    text = TextQueries(F.normalize(torch.randn(NUM_DATASET, model.visual.output_dim, generator=generator), dim=-1),
                       F.normalize(torch.randn(NUM_ATP, model.visual.output_dim, generator=generator), dim=-1),
                       tuple(range(NUM_DATASET)), NUM_DATASET)
    return model, TextQueries(text.dataset.to(device), text.extra.to(device), text.query_to_class, NUM_DATASET)


def install_mmseg_stand_ins():
    """Minimal modules for the names the released segmentor imports from mmseg / mmengine / pkg_resources."""
    import packaging.version

    class BaseSegmentor(nn.Module):
        def __init__(self, data_preprocessor=None):
            super().__init__()

    class Registry:
        @staticmethod
        def register_module(*args, **kwargs):
            return lambda cls: cls

    modules = {name: types.ModuleType(name) for name in (
        "mmseg", "mmseg.models", "mmseg.models.segmentors", "mmseg.models.data_preprocessor", "mmseg.registry",
        "mmengine", "mmengine.structures", "pkg_resources")}
    modules["mmseg.models.segmentors"].BaseSegmentor = BaseSegmentor
    modules["mmseg.models.data_preprocessor"].SegDataPreProcessor = lambda **kwargs: None
    modules["mmseg.registry"].MODELS = Registry()
    modules["mmengine.structures"].PixelData = dict
    modules["pkg_resources"].packaging = packaging
    for name, module in modules.items():
        sys.modules.setdefault(name, module)


class DataSample:
    def set_data(self, data):
        self.data = data


def build_released(code, model, text, device, folder):
    """The released CLIPForSegmentation holding ``model``'s weights and ``text``'s embeddings."""
    install_mmseg_stand_ins()
    sys.path.insert(0, code)
    import clip  # the release's vendored, modified OpenAI CLIP
    import clip_segmentor

    weights = os.path.join(folder, "ViT-B-16.pt")
    torch.save({key: value.cpu() for key, value in model.state_dict().items()}, weights)
    names = os.path.join(folder, "names.txt")
    with open(names, "w") as f:
        f.write("\n".join(list(read_class_names_file("voc21.txt").queries) + atp_words()) + "\n")
    load = clip.load

    def load_without_text_encoding(*args, **kwargs):  # its prompts are replaced below: skip encoding 8080
        net, preprocess = load(*args, **kwargs)
        net.encode_text = lambda tokens: torch.zeros(len(tokens), net.text_projection.shape[1], device=device)
        return net, preprocess

    clip_segmentor.clip.load = load_without_text_encoding
    released = clip_segmentor.CLIPForSegmentation(weights, names, device=torch.device(device), logit_scale=50,
                                                  prob_thd=0.5)
    released.query_features_ori = torch.cat([text.dataset, text.extra])
    released.query_features = text.dataset
    released.dtype = text.dataset.dtype
    if device == "cpu":
        released.kl_temp_weight = released.kl_temp_weight.float()
    backbone = {"seconds": 0.0}
    encode_image = released.net.encode_image

    def timed_encode_image(*args, **kwargs):
        synchronize(device)
        start = time.perf_counter()
        out = encode_image(*args, **kwargs)
        synchronize(device)
        backbone["seconds"] += time.perf_counter() - start
        return out

    released.net.encode_image = timed_encode_image
    return released, backbone


def run_released(released, image, output_size, autocast_dtype=None):
    """Labels of the released pipeline (sliding windows, post-processing) for one (3, H1, W1) image, optionally
    under autocast."""
    autocast = (torch.autocast(image.device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    with autocast:
        logits = released.forward_slide(image[None], [{"ori_shape": output_size}], 224, 448)
    sample = DataSample()
    released.postprocess_result(logits, [sample])
    return sample.data["pred_sem_seg"]["data"][0]


# ---- measurements ----------------------------------------------------------------------------------------
def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device, call):
    synchronize(device)
    start = time.perf_counter()
    out = call()
    synchronize(device)
    return time.perf_counter() - start, out


def gemm_rate(device, dtype, size=4096, repeats=5):
    """Sustained GEMM FLOP/s: best of ``repeats`` size^2 x size^2 matmuls."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    return 2 * size ** 3 / min(timed(device, lambda: a @ b)[0] for _ in range(repeats))


def backbone_flops(visual, grid, windows):
    """Multiply-add FLOPs (x2) of the patch embedding, blocks 1..L-1 and MaskCLIP's last block, and of the
    second pass, for ``windows`` crops of ``grid`` patches."""
    num = grid[0] * grid[1]
    tokens, width = num + 1, visual.conv1.out_channels
    hidden = visual.transformer.resblocks[0].mlp.c_fc.out_features
    patch = visual.conv1.kernel_size[0] * visual.conv1.kernel_size[1] * visual.conv1.in_channels
    mlp = 2 * 2 * tokens * width * hidden
    block = 2 * tokens * width * 4 * width + 2 * 2 * tokens ** 2 * width + mlp
    projection = 2 * tokens * width * visual.output_dim
    first = 2 * num * patch * width + (len(visual.transformer.resblocks) - 1) * block
    first += 2 * 2 * tokens * width * width + mlp + projection  # values, out_proj, MLP, projection
    second = 2 * num * num * width + 2 * tokens * width * width + mlp + projection
    return windows * first, windows * second


class StageClock:
    """``CDAMSegmentor.stage_timer``: seconds per stage name, the device synchronised around each stage."""

    def __init__(self, device):
        self.device, self.seconds = device, {}

    @contextlib.contextmanager
    def __call__(self, name):
        synchronize(self.device)
        start = time.perf_counter()
        yield
        synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@torch.no_grad()
def stage_times(segmentor, image, output_size, text, device):
    """Seconds per stage of one call."""
    segmentor.stage_timer = clock = StageClock(device)
    try:
        segmentor(image, output_size, text)
    finally:
        segmentor.stage_timer = None
    return {stage: clock.seconds.get(stage, 0.0) for stage in STAGES}


class PeakRSS:
    """Samples the resident set size in a thread while active."""

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.start = self.peak = self.now()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.now())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.now())


def precisions(args):
    """(this package's backbone dtype, the released code's autocast dtype or None) of the command line."""
    dtype = DTYPES[args.precision or ("fp16" if args.device == "cuda" else "fp32")]  # the configs' defaults
    return dtype, (dtype if args.released_autocast and dtype != torch.float32 else None)


@torch.no_grad()
def measure_memory(row, windows, args):
    """Peak memory of one call (fresh process): MiB above the resident size before it, and the total."""
    model, text = build_model(args.device)
    dtype, released_autocast = precisions(args)
    (height, width), output_size = CASES[windows]
    image = torch.randn(3, height, width, generator=torch.Generator().manual_seed(windows)).to(args.device)
    with tempfile.TemporaryDirectory() as folder:
        if row == "released":
            released = build_released(args.released_code, model, text, args.device, folder)[0]
            call = lambda: run_released(released, image, output_size, released_autocast)  # noqa: E731
        else:
            segmentor = CDAMSegmentor(DenseCLIPEncoder(model.visual), autocast_dtypes={args.device: dtype})
            call = lambda: segmentor(image, output_size, text)  # noqa: E731
        if args.device == "cuda":
            call()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            call()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            return (peak - before) / 2 ** 20, peak / 2 ** 20
        with PeakRSS() as rss:
            call()
        return (rss.peak - rss.start) / 2 ** 20, rss.peak / 2 ** 20


def spread(values):
    return f"{min(values):.3f} ({min(values):.2f}-{max(values):.2f})"


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="",
                        help="this package's backbone precision (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--released-autocast", action="store_true",
                        help="run the released code under the same autocast as --precision")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", default="1,2,3", help="window counts to run (1, 2, 3)")
    parser.add_argument("--released-code", default="", help="checkout of janeyeon/CDAM-CLIP")
    parser.add_argument("--memory", action="store_true", help="also peak memory, one fresh process per row")
    parser.add_argument("--memory-row", nargs=2, help=argparse.SUPPRESS)  # internal: (row, windows)
    args = parser.parse_args()
    if args.device == "cpu" and args.precision == "fp16":
        parser.error("--precision fp16 is CUDA only (MODEL.CDAM.CPU_PRECISION is fp32 or bf16)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_row:
        print(json.dumps(measure_memory(args.memory_row[0], int(args.memory_row[1]), args)))
        return
    device = args.device
    window_counts = [int(count) for count in args.windows.split(",")]
    model, text = build_model(device)
    dtype, released_autocast = precisions(args)
    segmentor = CDAMSegmentor(DenseCLIPEncoder(model.visual), autocast_dtypes={device: dtype})
    rate = gemm_rate(device, dtype)
    folder = tempfile.TemporaryDirectory()
    released, released_backbone = (build_released(args.released_code, model, text, device, folder.name)
                                   if args.released_code else (None, None))
    print(f"device {device}, threads {torch.get_num_threads()}, backbone dtype {dtype} (released: "
          f"{released_autocast or 'its own'}), sustained GEMM "
          f"{rate / 1e9:.0f} GFLOP/s, ViT-B/16 random weights, Q = {NUM_DATASET} + {NUM_ATP} ATP, "
          f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for windows in window_counts:
        (height, width), output_size = CASES[windows]
        image = torch.randn(3, height, width, generator=torch.Generator().manual_seed(windows)).to(device)
        segmentor(image, output_size, text)  # warm-up (allocator, position-embedding cache)
        if released is not None:
            run_released(released, image, output_size, released_autocast)
        times = {"ours": [], "released": [], "released backbone": [], **{stage: [] for stage in STAGES}}
        for _ in range(args.rounds):
            if released is not None:
                released_backbone["seconds"] = 0.0
                seconds, released_labels = timed(device, lambda: run_released(released, image, output_size,
                                                                                      released_autocast))
                times["released"].append(seconds)
                times["released backbone"].append(released_backbone["seconds"])
            seconds, result = timed(device, lambda: segmentor(image, output_size, text))
            times["ours"].append(seconds)
            for stage, value in stage_times(segmentor, image, output_size, text, device).items():
                times[stage].append(value)
        first, second = backbone_flops(model.visual, (min(height, 448) // 16, min(width, 448) // 16), windows)
        rows.append((windows, times, first / rate, second / rate,
                     (released_labels != result.scores.argmax(0)).sum().item() if released is not None else None,
                     result.scores.shape[-2] * result.scores.shape[-1]))
    print("\nSeconds per image, best round (range over rounds):\n")
    print("| windows | backbone (FLOP floor) | CDAM map | second pass (floor) | post-processing | total "
          "| released: backbone | released: total | released / this |")
    print("|---|---|---|---|---|---|---|---|---|")
    for windows, times, floor, second_floor, different, pixels in rows:
        backbone, cdam_map, second_pass, post = (times[stage] for stage in STAGES)
        cells = [f"{spread(backbone)} ({floor:.3f})", spread(cdam_map), f"{spread(second_pass)} ({second_floor:.3f})",
                 spread(post), spread(times["ours"])]
        if released is not None:
            ratios = [r / o for r, o in zip(times["released"], times["ours"])]
            cells += [spread(times["released backbone"]), spread(times["released"]),
                      f"{min(times['released']) / min(times['ours']):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"]
        else:
            cells += ["-", "-", "-"]
        print(f"| {windows} | " + " | ".join(cells) + " |")
    for windows, times, floor, _, different, pixels in rows:
        note = f", labels differing from the released: {different} of {pixels} pixels" if different is not None else ""
        print(f"{windows} window(s): backbone at {100 * floor / min(times[STAGES[0]]):.0f}% of its FLOP floor; "
              f"total = {min(times['ours']) / floor:.2f}x the backbone floor{note}")
    if args.memory:
        print("\nPeak memory of one call (fresh process each), MiB above the resident size before it / total:")
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")  # glibc returns freed blocks: RSS follows tensors
        for windows in window_counts:
            for row in ["ours"] + (["released"] if args.released_code else []):
                command = [sys.executable, __file__, "--device", device, "--threads", str(torch.get_num_threads()),
                           "--released-code", args.released_code, "--memory-row", row, str(windows)]
                command += (["--precision", args.precision] * bool(args.precision)
                            + ["--released-autocast"] * args.released_autocast)
                done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                extra, total = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"  {windows} window(s), {row}: {extra:.0f} / {total:.0f}")
    folder.cleanup()


if __name__ == "__main__":
    main()
