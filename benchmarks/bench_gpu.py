#!/usr/bin/env python
"""GPU figures of cdam_d2, one part per call, merged into one table (``benchmarks/gpu_check.sh`` runs it).

    python benchmarks/bench_gpu.py cdam --json OUT/bench_cdam.json
    python benchmarks/bench_gpu.py clustercam --json OUT/bench_clustercam.json
    python benchmarks/bench_gpu.py evaluator --json OUT/bench_evaluator.json
    python benchmarks/bench_gpu.py table OUT/bench_*.json [--tests OUT/cuda_tests.xml] [--markdown OUT/table.md]

- ``cdam``: configs/cdam_voc21.yaml (random ViT-B/16 weights, 80 templates, VOC names + 80 ATP words),
  VOC-sized images (375x500 -> 448x597 by the test resize: 2 windows, pushed through the backbone as
  one batch) in fp32, fp16 and bf16: ms per image for the model alone (input already decoded and
  resized, host-to-device copy included), with Detectron2's test loader (JPEG decode + resize in
  DATALOADER.NUM_WORKERS workers), and with the evaluator too; beside each, the floor set by the
  matrix FLOPs of the pipeline at the chip's dense peak for that precision, and the labels' agreement
  with fp32.
- ``clustercam``: configs/clustercam_voc.yaml (random DeiT-S, K = 20) at its SOLVER.IMS_PER_BATCH
  and INPUT.SIZE: one training iteration of Detectron2's AMPTrainer (SOLVER.AMP.ENABLED as in the
  config) and of SimpleTrainer (fp32), in the classification and the segmentation phase, on one
  fixed batch (no data loading); 5-scale inference of a 375x500 image; dense CRF throughput.
- ``evaluator``: ``SemSegEvaluator.process`` per 375x500 prediction, scores on CUDA and on the CPU,
  21 and 81 classes, alternating rounds (best round reported).

Timings synchronise the GPU around each timed call and report the median (min) over the repeats.
``--dry-run`` runs a part on the CPU with tiny models: a check of the script, not a measurement.
"""
import argparse
import glob
import itertools
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
CONFIGS = os.path.join(REPO, "configs")

VOC_SIZE = (375, 500)
# NVIDIA H200 SXM datasheet, dense (the datasheet's tensor-core figures are with sparsity: halved here).
H200_PEAK_TFLOPS = {"fp16": 989.4, "bf16": 989.4, "tf32": 494.7, "fp32": 66.9}
PRECISIONS = ("fp32", "fp16", "bf16")
DEVICE = "cuda"  # "cpu" in a dry run


# ------------------------------------------------------------------------------------------------ helpers
def require_cuda():
    import torch

    if not torch.cuda.is_available():
        sys.exit(f"bench_gpu.py needs a CUDA GPU: torch.cuda.is_available() is False here (torch "
                 f"{torch.__version__}, built for CUDA {torch.version.cuda}). Run it on a GPU machine, e.g. "
                 "through `bash benchmarks/gpu_check.sh` (README, section GPU).")


def synchronize():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory():
    import torch

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib():
    import torch

    return torch.cuda.max_memory_allocated() / 2 ** 20 if DEVICE == "cuda" else 0.0


def release_memory():
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def timed(function, repeats, warmup=2):
    """Median and min wall time (ms) of ``function()`` over ``repeats`` calls, GPU synchronised."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), min(times)


def ms(median_min):
    return f"{median_min[0]:.2f} ms (min {median_min[1]:.2f})"


def load_cfg(config_file, *opts):
    from cdam_d2.engine import load_cfg as load

    return load(os.path.join(CONFIGS, config_file), ["MODEL.DEVICE", DEVICE, *opts])[0]


def scene(rng, height, width):
    """(H, W, 3) uint8 RGB: smooth texture and two coloured rectangles (compresses like a photo)."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = 128 + 50 * np.sin(xx[..., None] / rng.uniform(6, 30, 3) + yy[..., None] / rng.uniform(6, 30, 3))
    for _ in range(2):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y0:y0 + height // 3, x0:x0 + width // 3] = rng.integers(0, 256, 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_voc_like(root, num_images, seed=0):
    """``num_images`` JPEGs of 375x500 with random label PNGs in the VOC val layout under ``root``;
    registered as ``cdam_gpu_bench_voc21``. Returns the dataset name."""
    from PIL import Image

    from cdam_d2.data.datasets.layouts import LAYOUTS
    from cdam_d2.data.datasets.register import register_sem_seg_layout

    layout = LAYOUTS["cdam_voc21_sem_seg_val"]
    rng = np.random.default_rng(seed)
    for folder in (layout.image_dir, layout.label_dir, os.path.dirname(layout.split_file)):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    ids = [f"bench_{index:04d}" for index in range(num_images)]
    for image_id in ids:
        Image.fromarray(scene(rng, *VOC_SIZE)).save(os.path.join(root, layout.image_dir, image_id + ".jpg"), quality=90)
        label = rng.integers(0, len(layout.classes), VOC_SIZE).astype(np.uint8)
        Image.fromarray(label).save(os.path.join(root, layout.label_dir, image_id + ".png"))
    with open(os.path.join(root, layout.split_file), "w") as f:
        f.write("\n".join(ids) + "\n")
    name = "cdam_gpu_bench_voc21"
    register_sem_seg_layout(layout, root, name=name)
    return name


# ------------------------------------------------------------------------------------------------- floors
def vit_matmul_gflop(model_name="ViT-B-16", crop=448, cdam_second_pass=True, queries=101, dataset_queries=21):
    """Matrix FLOPs of one window: the plain ViT forward, and CDAM's pipeline (blocks 1..L-1, the
    MaskCLIP first pass of the last block, the CDAM second pass with its N x N map on the first pass's
    values (computed once for both passes, as ``dense_clip`` does), the two projections and cosine
    logits). Counted from the open_clip model config, 2 FLOPs per MAC."""
    import open_clip

    config = open_clip.get_model_config(model_name)
    vision = config["vision_cfg"]
    width, layers, patch = vision["width"], vision["layers"], vision["patch_size"]
    hidden = int(width * vision.get("mlp_ratio", 4.0))
    embed = config["embed_dim"]
    patches = (crop // patch) ** 2
    tokens = patches + 1
    embedding = 2 * patches * 3 * patch * patch * width
    qkv, out, mlp = 2 * tokens * width * 3 * width, 2 * tokens * width * width, 2 * 2 * tokens * width * hidden
    attention = 2 * 2 * tokens * tokens * width
    block = qkv + attention + out + mlp
    vit = embedding + layers * block
    value = 2 * tokens * width * width
    project = 2 * tokens * width * embed
    first_pass = value + out + mlp + project + 2 * patches * embed * queries
    second_pass = 2 * patches * patches * width + out + mlp + project + 2 * patches * embed * dataset_queries
    cdam = embedding + (layers - 1) * block + first_pass + (second_pass if cdam_second_pass else 0)
    return vit / 1e9, cdam / 1e9


def measured_gemm_tflops():
    """TFLOP/s of an 8192^3 matrix product in each precision (median of 10 after 3 warm-ups), random data."""
    import torch

    size, results = (8192 if DEVICE == "cuda" else 256), {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype, allow_tf32 in (("fp16", torch.float16, False), ("bf16", torch.bfloat16, False),
                                        ("tf32", torch.float32, True), ("fp32", torch.float32, False)):
            torch.backends.cuda.matmul.allow_tf32 = allow_tf32
            a = torch.randn(size, size, device=DEVICE, dtype=dtype)
            b = torch.randn(size, size, device=DEVICE, dtype=dtype)
            median, _ = timed(lambda: a @ b, 10, warmup=3)
            results[name] = 2 * size ** 3 / (median / 1000) / 1e12
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    release_memory()
    return results


def datasheet_peaks():
    import torch

    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "the CPU"
    return (H200_PEAK_TFLOPS, "H200 SXM datasheet, dense") if "H200" in name else (None, f"no datasheet peak for {name}")


def environment():
    import torch

    if DEVICE != "cuda":
        return {"gpu": "CPU (dry run)", "memory_gib": 0, "sm_count": 0, "torch": torch.__version__,
                "cuda": torch.version.cuda, "cores": os.cpu_count(), "python": sys.version.split()[0]}
    properties = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(), "memory_gib": round(properties.total_memory / 2 ** 30, 1),
            "sm_count": properties.multi_processor_count, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cores": os.cpu_count(), "python": sys.version.split()[0]}


# --------------------------------------------------------------------------------------------------- CDAM
def bench_cdam(args, rows):
    import torch
    from detectron2.modeling import build_model

    from cdam_d2.engine import Trainer
    from cdam_d2.evaluation import SemSegEvaluator

    gemm = measured_gemm_tflops()
    peaks, peak_source = datasheet_peaks()
    for name, value in gemm.items():
        sheet = f"; datasheet {peaks[name]:.0f}" if peaks else ""
        rows.append({"part": "GPU", "measurement": f"8192³ matmul, {name}", "value": f"{value:.4g} TFLOP/s",
                     "reference": f"measured{sheet}"})
    vit_gflop, cdam_gflop = vit_matmul_gflop()
    crop, stride = 448, 224
    height, width = 448, 597  # VOC 375x500 after the test resize (short side 448)
    windows = (max(math.ceil((height - crop) / stride), 0) + 1) * (max(math.ceil((width - crop) / stride), 0) + 1)
    rows.append({"part": "CDAM", "measurement": "matrix FLOPs per window (448²)",
                 "value": f"ViT-B/16 forward {vit_gflop:.1f} GFLOP; CDAM pipeline {cdam_gflop:.1f} GFLOP",
                 "reference": f"{windows} windows per VOC image (448×597)"})

    with tempfile.TemporaryDirectory() as root:
        dataset = write_voc_like(root, args.images)
        dry_run = []
        if DEVICE != "cuda":
            with open(os.path.join(root, "templates.txt"), "w") as f:
                f.write("a photo of a {}.\n")
            dry_run = ["MODEL.CDAM.CLIP_MODEL", "tiny:ViT-B-16", "MODEL.CDAM.TEMPLATES", f.name]
        reference = None
        for precision in PRECISIONS:
            cfg = load_cfg("cdam_voc21.yaml", "MODEL.CDAM.CLIP_WEIGHTS", "random", "MODEL.CDAM.PRECISION", precision,
                           "MODEL.CDAM.TEXT_CACHE_DIR", "", "DATASETS.TEST", f"('{dataset}',)", *dry_run)
            model = build_model(cfg).eval()
            loader = Trainer.build_test_loader(cfg, dataset)
            with torch.no_grad():
                model.dataset_queries(dataset)  # text embeddings once, as an evaluation does
                mapped = list(itertools.islice(iter(loader), 4))
                reset_peak_memory()
                alone = timed(lambda: model(mapped[0]), args.repeats)
                peak = peak_memory_mib()
                with_loader = loader_ms_per_image(model, loader, None, args.warmup_images)
                evaluator = SemSegEvaluator(dataset, distributed=False)
                evaluator.reset()
                with_evaluator = loader_ms_per_image(model, loader, evaluator, args.warmup_images)
                outputs = [precision_outputs(model, batch[0], dataset) for batch in mapped]
            agreement = ""
            if reference is None:
                reference = outputs
            else:
                agreement = "; vs fp32 on " + agreement_with(reference, outputs)
            floor_key = "tf32" if precision == "fp32" else precision
            floors = []
            if peaks:
                floors.append(f"{windows * cdam_gflop / peaks[floor_key]:.3f} ms at {peaks[floor_key]:.0f} "
                              f"TFLOP/s ({floor_key}, {peak_source})")
                if precision == "fp32":
                    floors.append(f"{windows * cdam_gflop / peaks['fp32']:.2f} ms at {peaks['fp32']:.0f} (plain "
                                  "fp32: torch keeps fp32 matmuls off TF32 by default)")
            floors.append(f"{windows * cdam_gflop / gemm[floor_key]:.3f} ms at the measured {floor_key} matmul")
            rows += [
                {"part": "CDAM", "measurement": f"{precision}: model alone, ms/image (peak {peak:.0f} MiB)",
                 "value": ms(alone), "reference": "floor " + "; ".join(floors) + agreement},
                {"part": "CDAM", "measurement": f"{precision}: + Detectron2 test loader "
                 f"({cfg.DATALOADER.NUM_WORKERS} workers), ms/image", "value": f"{with_loader:.2f} ms", "reference": ""},
                {"part": "CDAM", "measurement": f"{precision}: + loader + evaluator, ms/image",
                 "value": f"{with_evaluator:.2f} ms", "reference": ""},
            ]
            del model, loader
            release_memory()


def precision_outputs(model, record, dataset):
    """(final labels, cosine logits) of one mapped record, on the CPU."""
    normalized = (record["image"].to(model.device).float() - model.pixel_mean) / model.pixel_std
    result = model.segmentor(normalized, (record["height"], record["width"]), model.dataset_queries(dataset))
    return result.scores.argmax(0).cpu(), result.logits.cpu()


def agreement_with(reference, outputs):
    """Largest and mean absolute logit difference, and the share of identical final and argmax labels, against fp32."""
    differences = [(logits - ref_logits).abs() for (_, logits), (_, ref_logits) in zip(outputs, reference)]
    final = np.mean([(a[0] == b[0]).double().mean().item() for a, b in zip(outputs, reference)])
    argmax = np.mean([(a[1].argmax(0) == b[1].argmax(0)).double().mean().item() for a, b in zip(outputs, reference)])
    return (f"{len(outputs)} images: max Δlogit {max(d.max().item() for d in differences):.2e}, mean "
            f"{np.mean([d.mean().item() for d in differences]):.2e}; final labels {100 * final:.3f}% and argmax "
            f"labels {100 * argmax:.3f}% identical")


def loader_ms_per_image(model, loader, evaluator, warmup_images):
    """ms per image over the loader, after ``warmup_images`` images (workers started, caches warm)."""
    count, start = 0, None
    for index, batch in enumerate(loader):
        if index == warmup_images:
            synchronize()
            start = time.perf_counter()
        outputs = model(batch)
        if evaluator is not None:
            evaluator.process(batch, outputs)
        if start is not None:
            count += len(batch)
    synchronize()
    return 1000 * (time.perf_counter() - start) / count


# --------------------------------------------------------------------------------------------- ClusterCAM
def bench_clustercam(args, rows):
    import torch
    from detectron2.engine import AMPTrainer, SimpleTrainer
    from detectron2.utils.events import EventStorage

    from cdam_d2.engine import Trainer
    from cdam_d2.clustercam.modeling import CRFParams, CRFWorkerPool, DenseCRFPostProcessor

    config = "clustercam_voc.yaml" if DEVICE == "cuda" else "quick_schedules/clustercam_voc_toy.yaml"
    cfg = load_cfg(config, "MODEL.CLUSTERCAM.PRETRAINED", "", "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False")
    batch_size, size = cfg.SOLVER.IMS_PER_BATCH, cfg.MODEL.CLUSTERCAM.INPUT.SIZE
    generator = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator),
              "image_labels": [1 + index % 20, 15]} for index in range(batch_size)]
    trainers = [("AMP (SOLVER.AMP.ENABLED)", AMPTrainer)] if cfg.SOLVER.AMP.ENABLED else []
    for (phase, start_iter), (precision, trainer_class) in itertools.product(
            (("classification phase", 0), ("segmentation phase", cfg.MODEL.CLUSTERCAM.LOSS.SEG_START_ITER)),
            trainers + [("fp32", SimpleTrainer)]):
        torch.manual_seed(0)
        model = Trainer.build_model(cfg).train()
        trainer = trainer_class(model, itertools.repeat(batch), Trainer.build_optimizer(cfg, model))
        with EventStorage(start_iter) as storage:
            def step():
                storage.iter = trainer.iter = storage.iter + 1
                trainer.run_step()

            reset_peak_memory()
            result = timed(step, args.repeats, warmup=2)
        peak = peak_memory_mib()
        rows.append({"part": "ClusterCAM", "measurement": f"train iteration, {phase}, {precision}, batch "
                     f"{batch_size} @ {size}² (peak {peak:.0f} MiB)", "value": ms(result),
                     "reference": f"{1000 * batch_size / result[0]:.0f} images/s"})
        del model, trainer
        release_memory()

    model = Trainer.build_model(cfg).eval()
    record = {"image": torch.randint(0, 256, (3, *VOC_SIZE), dtype=torch.uint8, generator=generator),
              "height": VOC_SIZE[0], "width": VOC_SIZE[1]}
    with torch.no_grad():
        result = timed(lambda: model([record]), args.repeats)
    scales = cfg.MODEL.CLUSTERCAM.TEST.SCALES
    rows.append({"part": "ClusterCAM", "measurement": f"inference 375×500, {len(scales)} scales, no CRF",
                 "value": ms(result), "reference": "fp32"})
    del model
    release_memory()
    crf = cfg.MODEL.CLUSTERCAM.TEST.CRF
    params = CRFParams(crf.NUM_ITERS, crf.GAUSSIAN_SXY, crf.GAUSSIAN_COMPAT, crf.BILATERAL_SXY, crf.BILATERAL_SRGB,
                       crf.BILATERAL_COMPAT)
    workers = os.cpu_count()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*VOC_SIZE, 3), dtype=np.uint8) for _ in range(2 * workers)]
    probs = [rng.random((21, *VOC_SIZE), dtype=np.float32) for _ in images]
    with CRFWorkerPool(workers) as pool:  # as an evaluation holds it
        runner = DenseCRFPostProcessor(params, pool)
        runner(images[:workers], probs[:workers])  # the workers are up and warm
        start = time.perf_counter()
        runner(images, probs)
        rate = len(images) / (time.perf_counter() - start)
    rows.append({"part": "ClusterCAM", "measurement": f"dense CRF 375×500, 21 labels, {params.num_iters} iterations, "
                 f"{workers} worker processes", "value": f"{rate:.1f} images/s", "reference": "CPU (pydensecrf)"})


# ---------------------------------------------------------------------------------------------- evaluator
def bench_evaluator(args, rows):
    import torch

    from cdam_d2.evaluation import SemSegEvaluator

    for num_classes in (21, 81):
        with tempfile.TemporaryDirectory() as root:
            name = f"cdam_gpu_bench_eval{num_classes}"
            records = random_label_dataset(root, name, num_classes, args.images)
            generator = torch.Generator().manual_seed(0)
            scores = [torch.rand(num_classes, *VOC_SIZE, generator=generator) for _ in records]
            on_cuda = [s.to(DEVICE) for s in scores]
            best = {"cuda": math.inf, "cpu": math.inf}
            results = {}
            for _ in range(args.rounds):
                for device, predictions in (("cuda", on_cuda), ("cpu", scores)):
                    evaluator = SemSegEvaluator(name, distributed=False)
                    evaluator.reset()
                    synchronize()
                    start = time.perf_counter()
                    for record, prediction in zip(records, predictions):
                        evaluator.process([record], [{"sem_seg": prediction}])
                    synchronize()
                    best[device] = min(best[device], 1000 * (time.perf_counter() - start) / len(records))
                    results[device] = evaluator.evaluate()["sem_seg"]["mIoU"]
            if results["cuda"] != results["cpu"]:
                raise RuntimeError(f"evaluator: mIoU on CUDA {results['cuda']} != CPU {results['cpu']}")
            rows.append({"part": "evaluator", "measurement": f"process(), {num_classes} classes, 375×500, scores on "
                         "CUDA, ms/image", "value": f"{best['cuda']:.2f} ms",
                         "reference": f"scores on the CPU: {best['cpu']:.2f} ms ({torch.get_num_threads()} threads); "
                         f"same mIoU; best of {args.rounds} alternating rounds of {len(records)} images"})


def random_label_dataset(root, name, num_classes, count):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from PIL import Image

    rng = np.random.default_rng(0)
    records = []
    for index in range(count):
        label = rng.integers(0, num_classes, VOC_SIZE).astype(np.uint8)
        label[rng.random(VOC_SIZE) < 0.05] = 255
        path = os.path.join(root, f"{index}.png")
        Image.fromarray(label).save(path)
        records.append({"file_name": f"{index}.jpg", "sem_seg_file_name": path})
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=[f"c{i}" for i in range(num_classes)], ignore_label=255)
    return records


# ------------------------------------------------------------------------------------------------- table
def test_summary(path):
    """One row from a pytest JUnit XML file."""
    if not path or not os.path.isfile(path):
        return {"part": "tests", "measurement": "tests/test_cuda.py", "value": "no result (did not finish?)",
                "reference": path or ""}
    root = ElementTree.parse(path).getroot()
    status = {}  # (class, test) -> "failed" / "skipped" / "passed"; subtests share their test's entry
    for case in root.iter("testcase"):
        key = (case.get("classname", "").split(".")[-1], case.get("name"))
        tags = {child.tag for child in case}
        state = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
        if status.get(key) != "failed":
            status[key] = state
    counts = {state: sum(1 for s in status.values() if s == state) for state in ("passed", "failed", "skipped")}
    failed = [f"{cls}.{name}" for (cls, name), state in status.items() if state == "failed"]
    seconds = sum(float(suite.get("time", 0)) for suite in root.iter("testsuite"))
    value = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    return {"part": "tests", "measurement": "tests/test_cuda.py", "value": value,
            "reference": ("failed: " + ", ".join(failed)) if failed else f"{seconds:.0f} s"}


def print_table(args):
    rows, environments, errors = [test_summary(args.tests)], [], []
    for path in sorted(itertools.chain.from_iterable(glob.glob(p) for p in args.json)):
        with open(path) as f:
            part = json.load(f)
        environments.append(part.get("env"))
        rows += part.get("rows", [])
        if part.get("error"):
            errors.append(f"{part['part']}: {part['error']}")
    for path, part in ((p, os.path.basename(p)) for p in args.expect):
        if not os.path.isfile(path):
            errors.append(f"{part}: no result (timed out or crashed; see the log)")
    env = next((e for e in environments if e), None)
    lines = []
    if env:
        lines.append(f"{env['gpu']} ({env['memory_gib']} GiB, {env['sm_count']} SMs), {env['cores']} cores, "
                     f"torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}")
    lines += ["", "| part | measurement | value | floor / reference |", "|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['measurement']} | {r['value']} | {r['reference']} |" for r in rows]
    lines += [f"| not measured | {error} | | |" for error in errors]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


PARTS = {"cdam": bench_cdam, "clustercam": bench_clustercam, "evaluator": bench_evaluator}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in PARTS:
        part = commands.add_parser(name)
        part.add_argument("--json", required=True, help="where to write this part's rows")
        part.add_argument("--repeats", type=int, default=20)
        part.add_argument("--images", type=int, default=48, help="images of the synthetic VOC-sized dataset")
        part.add_argument("--warmup-images", type=int, default=8)
        part.add_argument("--rounds", type=int, default=3)
        part.add_argument("--dry-run", action="store_true", help="on the CPU, tiny models: checks the script only")
    table = commands.add_parser("table")
    table.add_argument("json", nargs="*", help="JSON files (globs) written by the parts")
    table.add_argument("--expect", nargs="*", default=[], help="JSON files that should exist (missing: reported)")
    table.add_argument("--tests", help="JUnit XML of the CUDA tests")
    table.add_argument("--markdown", help="also write the table here")
    args = parser.parse_args()
    if args.command == "table":
        return print_table(args)
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
    else:
        require_cuda()
    import torch

    torch.manual_seed(0)
    # `timeout` stops a part with SIGTERM: exit through the `finally` below, keeping the rows so far.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM (time limit)"))
    rows, error = [], None
    try:
        PARTS[args.command](args, rows)
    except BaseException as exc:  # the table still reports what was measured and why the rest is missing
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with open(args.json, "w") as f:
            json.dump({"part": args.command, "env": environment(), "rows": rows, "error": error}, f, indent=1)
        for row in rows:
            print(f"| {row['part']} | {row['measurement']} | {row['value']} | {row['reference']} |", flush=True)


if __name__ == "__main__":
    main()
