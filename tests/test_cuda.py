"""Every CUDA path of the package: CDAM in fp16/bf16 against fp32, ClusterCAM AMP training (Detectron2's
AMPTrainer), the evaluator and the dense CRF on CUDA predictions, device moves of CDAM's caches, and
``tools/train_net.py`` with ``MODEL.DEVICE cuda``.

Without a GPU these tests are skipped and counted in one line (``requires_cuda`` in ``tests/helpers.py``); the CPU
emulation of reduced-precision CDAM runs everywhere. ``bash benchmarks/gpu_check.sh`` runs this file
on a GPU machine; ``CDAM_D2_CUDA_DRY_RUN=1`` runs the CUDA tests' code on the CPU (plumbing only).
"""
import contextlib
import copy
import itertools
import json
import math
import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from tests.helpers import (CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, CONFIGS, copypaste_miou, one_template_file,
                           requires_cuda, requires_detectron2, requires_real_cuda, run_tool_script, slow,
                           subprocess_env, toy_cfg)
from tests.helpers import CUDA_DRY_RUN as DRY_RUN
from tests.helpers import CUDA_TEST_DEVICE as DEVICE

VOC_VAL = "cdam_voc21_sem_seg_val"


def load_cfg(config_file, *opts, device=DEVICE):
    """``config_file`` with ``opts`` on the device of the CUDA tests (the CPU in a dry run)."""
    return toy_cfg(config_file, *opts, device=device)


def scene(seed, height, width):
    """(H, W, 3) uint8 RGB: a smooth textured background with two coloured shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    texture = 128 + 50 * np.sin(xx[..., None] / rng.uniform(6, 30, 3) + yy[..., None] / rng.uniform(6, 30, 3))
    image = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for shape in (draw.ellipse, draw.rectangle):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        box = [x0, y0, x0 + int(rng.integers(width // 5, width // 2)), y0 + int(rng.integers(height // 5, height // 2))]
        shape(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.array(image)


def fraction_equal(a, b):
    return (a == b).double().mean().item()


def empty_cuda_cache():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- CDAM precision
def segment_images(precision, records, templates, device=DEVICE, model_config=os.path.join(CONFIGS, "cdam_voc21.yaml"),
                   precision_key="MODEL.CDAM.PRECISION"):
    """Segment mapped records with a freshly built CDAM (random CLIP, seed 0) with ``precision_key`` set to
    ``precision``.

    Returns a list of (SegmentationResult with CPU tensors, Detectron2 output ``sem_seg`` on CPU)."""
    from detectron2.modeling import build_model

    cfg = load_cfg(model_config, "MODEL.CDAM.CLIP_WEIGHTS", "random", precision_key, precision,
                   "MODEL.CDAM.TEXT_CACHE_DIR", "", "MODEL.CDAM.TEMPLATES", templates, device=device)
    model = build_model(cfg).eval()
    queries = model.dataset_queries(VOC_VAL)
    outputs = []
    with torch.no_grad():
        for record in records:
            normalized = (record["image"].to(model.device).float() - model.pixel_mean) / model.pixel_std
            result = model.segmentor(normalized, (record["height"], record["width"]), queries)
            sem_seg = model([record])[0]["sem_seg"]
            if sem_seg.device.type != torch.device(device).type:
                raise AssertionError(f"CDAM returned sem_seg on {sem_seg.device}, expected {device}")
            result.scores, result.logits = result.scores.cpu(), result.logits.cpu()
            outputs.append((result, sem_seg.cpu()))
    del model
    empty_cuda_cache()
    return outputs


class PrecisionChecks:
    """Comparisons of reduced-precision CDAM results against fp32 (mixin; needs ``cls.results``).

    Bounds, per precision: cosine logits within ``max`` at every pixel and ``mean`` on average; the
    threshold within ``threshold`` (relative); final labels (threshold on, as released) and the
    thresholded-pixel mask identical at >= ``labels`` of the pixels; labels of the plain argmax of the
    logits identical at >= ``argmax``. Measured in the CPU emulation (fp16 / bf16): random ViT-B/16 at
    448x597, max |dlogit| 9.2e-5 / 9.0e-4, mean 1.3e-5 / 1.5e-4, argmax labels 99.978% / 99.78%
    identical; tiny CLIP at 224x299, 4.8e-4 / 3.9e-3, 9.7e-5 / 6.2e-4, final labels 99.947% / 99.72%,
    argmax 99.927% / 99.32%, threshold 9e-4 / 2.6e-3 relative. Random weights leave many pixels within
    1e-4 of a tie (ViT-B/16 logits spread by only ~0.014), which bf16's 8-bit mantissa cannot resolve:
    bf16 is held to 99.5% / 99%, fp16 (the released precision) to 99.9%.
    """

    TOLERANCES = {
        "fp16": {"max": 2e-3, "mean": 3e-4, "threshold": 3e-3, "labels": 0.999, "argmax": 0.999},
        "bf16": {"max": 1.5e-2, "mean": 2e-3, "threshold": 1e-2, "labels": 0.995, "argmax": 0.99},
    }
    emulated = False  # True: CPU autocast stands in for CUDA's

    def pairs(self, precision):
        return zip(self.results["fp32"], self.results[precision])

    def test_logits_within_tolerance(self):
        for precision, tol in self.TOLERANCES.items():
            for (ref, _), (low, _) in self.pairs(precision):
                difference = (ref.logits - low.logits).abs()
                with self.subTest(precision=precision):
                    self.assertTrue(bool(torch.isfinite(low.logits).all()))
                    self.assertLessEqual(difference.max().item(), tol["max"])
                    self.assertLessEqual(difference.mean().item(), tol["mean"])

    def test_threshold_and_its_encoding(self):
        for precision, tol in self.TOLERANCES.items():
            for (ref, _), (low, _) in self.pairs(precision):
                with self.subTest(precision=precision):
                    self.assertTrue(math.isfinite(low.threshold) and low.threshold > 0)
                    self.assertLessEqual(abs(low.threshold - ref.threshold), tol["threshold"] * ref.threshold)
                    encoded = {}
                    for name, result in (("fp32", ref), (precision, low)):
                        # The encoding recomputed from each run's own fp32 logits (LOGIT_SCALE 50, no
                        # synonyms in voc21.txt): the background channel is raised by 1 exactly where the
                        # max probability is below that run's threshold.
                        probs = torch.softmax(50.0 * result.logits.double(), dim=0)
                        raised = result.scores[0].double() - probs[0]
                        below = probs.amax(dim=0) < result.threshold
                        decided = (probs.amax(dim=0) - result.threshold).abs() > 1e-5
                        torch.testing.assert_close(raised[decided], below[decided].double(), atol=1e-4, rtol=0)
                        encoded[name] = raised > 0.5
                    self.assertGreaterEqual(fraction_equal(encoded["fp32"], encoded[precision]), tol["labels"])

    def test_labels_identical(self):
        for precision, tol in self.TOLERANCES.items():
            for (ref, ref_sem_seg), (low, low_sem_seg) in self.pairs(precision):
                with self.subTest(precision=precision):
                    final = fraction_equal(ref_sem_seg.argmax(0), low_sem_seg.argmax(0))
                    self.assertGreaterEqual(final, tol["labels"])
                    argmax = fraction_equal(ref.logits.argmax(0), low.logits.argmax(0))
                    self.assertGreaterEqual(argmax, tol["argmax"])

    def test_reduced_precision_changes_the_backbone_numerics(self):
        if DRY_RUN and not self.emulated:
            self.skipTest("a dry run on the CPU ignores MODEL.CDAM.PRECISION")
        for precision in self.TOLERANCES:
            for (ref, _), (low, _) in self.pairs(precision):
                self.assertFalse(torch.equal(ref.logits, low.logits), precision)

    def test_detectron2_output_is_the_segmentor_scores(self):
        for precision in self.results:
            for result, sem_seg in self.results[precision]:
                with self.subTest(precision=precision):
                    self.assertEqual(sem_seg.dtype, torch.float32)
                    torch.testing.assert_close(sem_seg, result.scores, atol=1e-5, rtol=0)


@requires_cuda
@requires_detectron2
class TestCDAMPrecisionCUDA(PrecisionChecks, unittest.TestCase):
    """configs/cdam_voc21.yaml with random ViT-B/16 weights, VOC images of 375x500 (448x597 after the
    test resize, 2 windows), 80 templates (1 in a dry run); PRECISION fp32, fp16, bf16 on CUDA."""

    @classmethod
    def setUpClass(cls):
        from cdam_d2.cdam.mapper import CDAMTestMapper

        cls.folder = tempfile.TemporaryDirectory()
        templates = one_template_file(cls.folder.name) if DRY_RUN else "openai_imagenet"
        mapper = CDAMTestMapper(load_cfg(os.path.join(CONFIGS, "cdam_voc21.yaml")))
        records = []
        for seed in range(1 if DRY_RUN else 4):
            path = os.path.join(cls.folder.name, f"{seed}.png")
            Image.fromarray(scene(seed, 375, 500)).save(path)
            records.append(mapper({"file_name": path, "meta": {"dataset_name": VOC_VAL}}))
        assert tuple(records[0]["image"].shape) == (3, 448, 597), records[0]["image"].shape
        cls.results = {precision: segment_images(precision, records, templates)
                       for precision in ("fp32", "fp16", "bf16")}

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()


def cuda_autocast_on_cpu(segmentor, device):
    """The segmentor's CUDA autocast, on the CPU: the backbone in fp16, the CDAM map in fp32."""
    dtype = segmentor.autocast_dtypes.get("cuda")
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@requires_detectron2
class TestCDAMPrecisionEmulatedOnCPU(PrecisionChecks, unittest.TestCase):
    """The same checks without a GPU, on the tiny random CLIP of the toy config (a 224x299 input in 64-pixel
    windows: 6 x 9 windows of a 4 x 4 patch grid): bf16 through the real CPU path (MODEL.CDAM.CPU_PRECISION),
    fp16 with the CUDA autocast emulated by CPU autocast."""

    emulated = True

    @classmethod
    def setUpClass(cls):
        from cdam_d2.cdam.modeling import CDAMSegmentor

        cls.folder = tempfile.TemporaryDirectory()
        records = [{"image": torch.from_numpy(scene(0, 224, 299)).permute(2, 0, 1).contiguous(),
                    "height": 188, "width": 250, "meta": {"dataset_name": VOC_VAL}}]
        templates = one_template_file(cls.folder.name)
        cls.results = {precision: segment_images(precision, records, templates, device="cpu",
                                                 model_config=CDAM_TOY_CONFIG, precision_key="MODEL.CDAM.CPU_PRECISION")
                       for precision in ("fp32", "bf16")}
        with mock.patch.object(CDAMSegmentor, "_autocast", cuda_autocast_on_cpu):
            cls.results["fp16"] = segment_images("fp16", records, templates, device="cpu", model_config=CDAM_TOY_CONFIG)

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()


# ------------------------------------------------------------------------------------- ClusterCAM training
def toy_root(folder):
    from cdam_d2.data.toy import make_toy_datasets

    root = os.path.join(folder, "datasets")
    make_toy_datasets(root)
    return root


def register_toy_voc(root, prefix):
    """The toy VOC train_aug and val splits under ``root``, registered as ``prefix + split``."""
    from cdam_d2.data.datasets.layouts import LAYOUTS
    from cdam_d2.data.datasets.register import register_sem_seg_layout

    names = {}
    for split, layout_name in (("train", "cdam_voc21_sem_seg_train_aug"), ("val", VOC_VAL)):
        names[split] = prefix + split
        register_sem_seg_layout(LAYOUTS[layout_name], root, name=names[split])
    return names


def unregister(names):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def optimizer_steps_taken(optimizer):
    """Number of ``optimizer.step()`` calls that updated parameters (AdamW counts them per parameter)."""
    return max(int(state["step"]) for state in optimizer.state.values())


@slow
@requires_real_cuda
@requires_detectron2
class TestClusterCAMAMPTraining(unittest.TestCase):
    """SOLVER.AMP.ENABLED True on CUDA: Detectron2's AMPTrainer with its GradScaler, in both phases."""

    def test_trainer_trains_both_phases_with_amp(self):
        from detectron2.engine import AMPTrainer

        from cdam_d2.engine import Trainer

        with tempfile.TemporaryDirectory() as folder:
            names = register_toy_voc(toy_root(folder), "cdam_cudatest_amp_")
            try:
                cfg = load_cfg(CLUSTERCAM_TOY_CONFIG, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "4",
                               "MODEL.CLUSTERCAM.LOSS.SEG_START_ITER", "2", "OUTPUT_DIR", os.path.join(folder, "out"),
                               "DATASETS.TRAIN", f"('{names['train']}',)", "DATASETS.TEST", f"('{names['val']}',)")
                trainer = Trainer(cfg)
                self.assertIsInstance(trainer._trainer, AMPTrainer)
                scaler = trainer._trainer.grad_scaler
                self.assertTrue(scaler.is_enabled())
                initial_scale = scaler.get_scale()
                trainer.train()
                with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
                    records = [json.loads(line) for line in f if line.strip()]
            finally:
                unregister(names.values())
        records = [r for r in records if "total_loss" in r]
        self.assertEqual(records[-1]["iteration"], 3)
        self.assertIn("loss_seg", records[-1])
        for record in records:
            for key in ("loss_cls", "loss_pat", "loss_seg", "total_loss"):
                if key in record:
                    self.assertTrue(math.isfinite(record[key]), (key, record))
        # GradScaler: every skipped step (inf/NaN gradients) halves the scale and skips AdamW's step.
        taken = optimizer_steps_taken(trainer.optimizer)
        self.assertGreaterEqual(taken, 2)
        self.assertEqual(scaler.get_scale(), initial_scale * 0.5 ** (4 - taken))
        self.assertEqual(next(trainer.model.parameters()).device.type, "cuda")

    def test_amp_steps_close_to_fp32_in_both_phases(self):
        """Full DeiT-S ClusterCAM (random init), batch 2 at 448x448, one fixed batch: from the same
        weights, the first AMP step's classification losses match fp32 within 1% and, in the
        classification phase, its unscaled gradient has cosine >= 0.99 with fp32's; three more AMP
        steps stay finite, with at most one step skipped by the GradScaler. ``loss_seg`` is only
        required finite: the pseudo-labels of a random network are noise that any rounding moves
        across the background band (CPU bf16 emulation: 0.15 against 0.30 in fp32)."""
        from detectron2.engine import AMPTrainer, SimpleTrainer
        from detectron2.utils.events import EventStorage

        from cdam_d2.engine import Trainer

        cfg = load_cfg(os.path.join(CONFIGS, "clustercam_voc.yaml"), "MODEL.CLUSTERCAM.PRETRAINED", "",
                       "MODEL.CLUSTERCAM.DROP_PATH", "0.0", "MODEL.CLUSTERCAM.INPUT.RANDOM_ERASING_PROB", "0.0",
                       "SOLVER.AMP.ENABLED", "True")
        torch.manual_seed(0)
        base = Trainer.build_model(cfg)
        generator = torch.Generator().manual_seed(0)
        batch = [{"image": torch.randint(0, 256, (3, 448, 448), dtype=torch.uint8, generator=generator),
                  "image_labels": labels} for labels in ([1, 15], [7])]
        seg_start = cfg.MODEL.CLUSTERCAM.LOSS.SEG_START_ITER
        for phase, start_iter in (("classification", 0), ("segmentation", seg_start)):
            runs = {}
            for name, trainer_class in (("fp32", SimpleTrainer), ("amp", AMPTrainer)):
                model = copy.deepcopy(base).train()
                optimizer = Trainer.build_optimizer(cfg, model)
                trainer = trainer_class(model, itertools.repeat(batch), optimizer)
                losses, gradient = [], None
                with EventStorage(start_iter) as storage:
                    for step in range(4 if name == "amp" else 1):
                        storage.iter = trainer.iter = start_iter + step
                        trainer.run_step()
                        losses.append({k: v[0] for k, v in storage.latest().items() if k.startswith("loss_")})
                        if step == 0:
                            gradient = torch.cat([p.grad.flatten().float() for p in model.parameters()
                                                  if p.grad is not None])
                runs[name] = (losses, gradient, optimizer)
            (fp32_losses, fp32_grad, _), (amp_losses, amp_grad, amp_optimizer) = runs["fp32"], runs["amp"]
            with self.subTest(phase=phase):
                expected_keys = {"loss_cls", "loss_pat"} | ({"loss_seg"} if start_iter else set())
                self.assertEqual(set(amp_losses[0]), expected_keys)
                for key in ("loss_cls", "loss_pat"):
                    value = fp32_losses[0][key]
                    self.assertLessEqual(abs(amp_losses[0][key] - value), 0.01 * abs(value) + 1e-3, key)
                for step_losses in amp_losses:
                    self.assertTrue(all(math.isfinite(v) for v in step_losses.values()), step_losses)
                # A first step skipped by the GradScaler leaves non-finite gradients.
                if start_iter == 0 and torch.isfinite(amp_grad).all():
                    self.assertGreaterEqual(F.cosine_similarity(amp_grad, fp32_grad, dim=0).item(), 0.99)
                self.assertGreaterEqual(optimizer_steps_taken(amp_optimizer), 3)
        empty_cuda_cache()


# ---------------------------------------------------------------------------------------- evaluator, CRF
def write_random_labelled_dataset(folder, name, num_classes, sizes, seed=0):
    """Random label PNGs (5% ignored) registered as ``name``; returns the records."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    rng = np.random.default_rng(seed)
    records = []
    for index, (height, width) in enumerate(sizes):
        label = rng.integers(0, num_classes, (height, width)).astype(np.uint8)
        label[rng.random((height, width)) < 0.05] = 255
        path = os.path.join(folder, f"{index}.png")
        Image.fromarray(label).save(path)
        records.append({"file_name": os.path.join(folder, f"{index}.jpg"), "sem_seg_file_name": path,
                        "height": height, "width": width})
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=[f"class{i}" for i in range(num_classes)], ignore_label=255,
                                  evaluator_type="sem_seg")
    return records


@requires_cuda
@requires_detectron2
class TestEvaluatorOnCUDA(unittest.TestCase):
    def test_cuda_scores_give_the_cpu_results(self):
        """fp32 and fp16 CUDA scores, with tied maxima and a NaN pixel, score exactly as on the CPU."""
        from cdam_d2.evaluation import SemSegEvaluator

        name, num_classes = "cdam_cudatest_evaluator", 21
        sizes = [(375, 500), (333, 500), (500, 375), (97, 131)]
        with tempfile.TemporaryDirectory() as folder:
            records = write_random_labelled_dataset(folder, name, num_classes, sizes)
            try:
                generator = torch.Generator().manual_seed(1)
                scores = []
                for height, width in sizes:
                    score = torch.randint(0, 6, (num_classes, height, width), generator=generator).float()
                    score[:, 0, 0] = float("nan")
                    scores.append(score)  # few distinct values: most maxima are ties
                results = {}
                for device, dtype in (("cpu", torch.float32), (DEVICE, torch.float32), (DEVICE, torch.float16)):
                    evaluator = SemSegEvaluator(name, distributed=False, boundary_iou=True)
                    evaluator.reset()
                    for record, score in zip(records, scores):
                        evaluator.process([record], [{"sem_seg": score.to(device=device, dtype=dtype)}])
                    results[(device, dtype)] = evaluator.evaluate()["sem_seg"]
            finally:
                unregister([name])
        reference = results[("cpu", torch.float32)]
        self.assertIn("BoundaryIoU-class3", reference)
        for key, result in results.items():
            with self.subTest(device=key[0], dtype=str(key[1])):
                self.assertEqual(list(result), list(reference))
                for metric, value in reference.items():
                    same = (math.isnan(value) and math.isnan(result[metric])) or value == result[metric]
                    self.assertTrue(same, (metric, value, result[metric]))


@slow
@requires_cuda
@requires_detectron2
class TestCRFOnCUDAPredictions(unittest.TestCase):
    def test_crf_marginals_of_cuda_probabilities(self):
        """ClusterCAM with the CRF (2 spawned workers) on CUDA: its outputs are on CUDA, at each record's
        size, and equal the dense CRF of the same model's CUDA probabilities (computed here in-process)."""
        from detectron2.modeling import build_model

        from cdam_d2.clustercam.modeling import CRFParams, dense_crf

        from cdam_d2.engine import Trainer

        torch.manual_seed(0)
        crf_cfg = load_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "True",
                           "MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "2")
        with_crf = build_model(crf_cfg).eval()
        without_crf = build_model(load_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False")).eval()
        without_crf.load_state_dict(with_crf.state_dict())
        records = [{"image": torch.from_numpy(scene(seed, height, width)).permute(2, 0, 1).contiguous(),
                    "height": out_height, "width": out_width}
                   for seed, (height, width, out_height, out_width) in
                   enumerate([(75, 100, 75, 100), (64, 96, 128, 192), (90, 70, 90, 70)])]
        # The CRF worker pool lives as long as an evaluation, as in Trainer.test.
        with Trainer.evaluation_context(crf_cfg, with_crf), torch.no_grad():
            self.assertIsNotNone(with_crf.crf.pool)
            outputs = with_crf(records)
            probabilities = without_crf([dict(r, height=r["image"].shape[1], width=r["image"].shape[2])
                                         for r in records])
        cfg_crf = load_cfg(CLUSTERCAM_TOY_CONFIG).MODEL.CLUSTERCAM.TEST.CRF
        params = CRFParams(cfg_crf.NUM_ITERS, cfg_crf.GAUSSIAN_SXY, cfg_crf.GAUSSIAN_COMPAT, cfg_crf.BILATERAL_SXY,
                           cfg_crf.BILATERAL_SRGB, cfg_crf.BILATERAL_COMPAT)
        for record, output, probs in zip(records, outputs, probabilities):
            sem_seg = output["sem_seg"]
            self.assertEqual(sem_seg.device.type, torch.device(DEVICE).type)
            self.assertEqual(tuple(sem_seg.shape), (21, record["height"], record["width"]))
            image = record["image"].permute(1, 2, 0).numpy()
            expected = torch.from_numpy(dense_crf(image, probs["sem_seg"].cpu().numpy(), params))
            expected = F.interpolate(expected[None], size=(record["height"], record["width"]), mode="bilinear",
                                     align_corners=False)[0]
            torch.testing.assert_close(sem_seg.cpu(), expected, atol=1e-4, rtol=0)
            torch.testing.assert_close(expected.sum(0), torch.ones_like(expected[0]), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------------ device moves
@requires_real_cuda
@requires_detectron2
class TestCDAMCachesFollowTheDevice(unittest.TestCase):
    """A CDAM built and run on the CPU, then ``.to("cuda")`` and back: its text queries and resampled
    position embeddings move with it and equal the CPU ones; so do its outputs (fp32, TF32 off)."""

    def setUp(self):
        self.tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def tearDown(self):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.tf32

    def test_move_to_cuda_and_back(self):
        from detectron2.modeling import build_model

        record = {"image": torch.from_numpy(scene(0, 96, 131)).permute(2, 0, 1).contiguous(), "height": 90,
                  "width": 120, "meta": {"dataset_name": VOC_VAL}}
        for disk_cache in (True, False):
            with self.subTest(disk_cache=disk_cache), tempfile.TemporaryDirectory() as folder:
                cfg = load_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.PRECISION", "fp32", "MODEL.CDAM.TEMPLATES",
                               one_template_file(folder), "MODEL.CDAM.TEXT_CACHE_DIR",
                               os.path.join(folder, "text") if disk_cache else "", device="cpu")
                model = build_model(cfg).eval()
                encoder = model.segmentor.encoder
                grid = encoder.grid_for(cfg.MODEL.CDAM.SLIDE_CROP, cfg.MODEL.CDAM.SLIDE_CROP)
                self.assertNotEqual(grid, tuple(encoder.visual.grid_size))  # a resampled, cached grid
                with torch.no_grad():
                    cpu_output = model([record])[0]["sem_seg"]
                    cpu_text = model.dataset_queries(VOC_VAL).dataset.clone()
                    cpu_positions = encoder.positional_embedding(grid).clone()
                    model.to("cuda")
                    cuda_output = model([record])[0]["sem_seg"]
                    cuda_text = model.dataset_queries(VOC_VAL).dataset
                    cuda_positions = encoder.positional_embedding(grid)
                    model.to("cpu")
                    back_output = model([record])[0]["sem_seg"]
                    back_positions = encoder.positional_embedding(grid)
                for tensor in (cuda_output, cuda_text, cuda_positions):
                    self.assertEqual(tensor.device.type, "cuda")
                if disk_cache:  # read back from the cache file: the very same numbers
                    self.assertTrue(torch.equal(cuda_text.cpu(), cpu_text))
                else:
                    torch.testing.assert_close(cuda_text.cpu(), cpu_text, atol=1e-5, rtol=0)
                torch.testing.assert_close(cuda_positions.cpu(), cpu_positions, atol=1e-6, rtol=1e-5)
                torch.testing.assert_close(cuda_output.cpu(), cpu_output, atol=1e-4, rtol=0)
                self.assertEqual(back_positions.device.type, "cpu")
                self.assertTrue(torch.equal(back_positions, cpu_positions))
                torch.testing.assert_close(back_output, cpu_output, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------- tools/train_net.py
@slow
@requires_cuda
@requires_detectron2
class TestTrainNetOnCUDA(unittest.TestCase):
    """``tools/train_net.py`` with ``MODEL.DEVICE cuda`` on the toy datasets (configs/quick_schedules)."""

    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        # Keeps the caller's PYTHONPATH (gpu_check.sh puts the carried packages on it).
        cls.env = subprocess_env(DETECTRON2_DATASETS=toy_root(cls.folder.name))

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def assert_ran_on_the_device(self, log):
        if DEVICE == "cuda":
            self.assertNotIn("CUDA is not available", log)
            self.assertNotIn("AMP needs CUDA", log)

    def test_cdam_eval_only(self):
        output = os.path.join(self.folder.name, "cdam")
        log = run_tool_script("train_net.py", ["--config-file", CDAM_TOY_CONFIG, "--eval-only", "MODEL.DEVICE", DEVICE,
                                               "OUTPUT_DIR", output], self.env)
        self.assert_ran_on_the_device(log)
        results = torch.load(os.path.join(output, "inference", VOC_VAL, "sem_seg_evaluation.pth"), weights_only=True)
        self.assertTrue(math.isfinite(results["mIoU"]))

    def test_clustercam_amp_training_then_eval_with_crf(self):
        output = os.path.join(self.folder.name, "clustercam")
        config, common = ["--config-file", CLUSTERCAM_TOY_CONFIG], ["MODEL.DEVICE", DEVICE, "OUTPUT_DIR", output]
        log = run_tool_script("train_net.py", [*config, *common, "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", "4"],
                              self.env)
        self.assert_ran_on_the_device(log)
        with open(os.path.join(output, "metrics.json")) as f:
            records = [json.loads(line) for line in f if line.strip()]
        records = [r for r in records if "total_loss" in r]
        self.assertIn("loss_seg", records[-1])  # the toy schedule enters the seg phase at iteration 2
        self.assertTrue(all(math.isfinite(r["total_loss"]) for r in records))
        log = run_tool_script("train_net.py", [*config, "--eval-only", *common, "MODEL.WEIGHTS",
                                               os.path.join(output, "model_final.pth"),
                                               "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "True"], self.env)
        self.assert_ran_on_the_device(log)
        self.assertTrue(0.0 <= copypaste_miou(log) <= 100.0)


if __name__ == "__main__":
    unittest.main()
