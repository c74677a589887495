"""CLIP weights are loaded as their authors meant, whatever the container (clip_loader), and a Detectron2
checkpoint of a CDAM model loads back strictly.

A tiny ViT config is registered with open_clip (so the real factory path runs); "OpenAI" checkpoints are built the
way OpenAI ships them: QuickGELU weights stored with fp16 linear/conv weights and fp32 LayerNorms, as a
TorchScript archive carrying input_resolution / context_length / vocab_size, and as state dicts with and
without those entries.
"""
import copy
import inspect
import json
import logging
import os
import tempfile
import unittest

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from cdam_d2.cdam.modeling import CDAMSegmentor, DenseCLIPEncoder, TextQueries, build_clip
from cdam_d2.cdam.modeling.clip_loader import OPENAI_ONLY_KEYS, file_fingerprint, resolve_clip_weights
from cdam_d2.weights import PickledWeightsError, WeightsFileError
from tests.helpers import CDAM_TOY_CONFIG, requires_detectron2, toy_cfg, truncate_half

TINY = "cdam-test-tiny-ViT-B-16"
OPENAI_EXTRAS = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}
_CONFIG_DIR = tempfile.TemporaryDirectory()  # registered configs must outlive every test of this module


def register_tiny_configs():
    """A tiny ViT-B/16-like open_clip config (head width 64, as OpenAI's) with GELU, and its -quickgelu twin."""
    if TINY in open_clip.list_models():
        return
    config = copy.deepcopy(open_clip.get_model_config("ViT-B-16"))
    config["embed_dim"] = 32
    config["vision_cfg"].update(layers=2, width=64, head_width=64)
    config["text_cfg"].update(layers=1, width=64, heads=1)
    for name, quick_gelu in [(TINY, False), (f"{TINY}-quickgelu", True)]:
        with open(os.path.join(_CONFIG_DIR.name, f"{name}.json"), "w") as f:
            json.dump(dict(config, quick_gelu=quick_gelu), f)
    open_clip.add_model_config(_CONFIG_DIR.name)


class OpenAIArchive(nn.Module):
    """Holds a CLIP's modules and parameters at top level, plus OpenAI's three integer entries."""

    def __init__(self, model: nn.Module):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, parameter in model.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, value in OPENAI_EXTRAS.items():
            self.register_buffer(name, torch.tensor(value))

    def forward(self, x):
        return self.logit_scale * x


def openai_checkpoints(folder: str, seed: int = 0):
    """Random QuickGELU weights in OpenAI's storage format, written as TorchScript and as state dicts.

    Returns:
        (model in fp32 holding the fp16-rounded weights, {container name: path})
    """
    register_tiny_configs()
    torch.manual_seed(seed)
    model = open_clip.CLIP(**dict(open_clip.get_model_config(TINY), quick_gelu=True)).eval()
    open_clip.model.convert_weights_to_lp(model)  # OpenAI's convert_weights: fp16 linear/conv, fp32 LayerNorm
    paths = {name: os.path.join(folder, f"{name}.pt") for name in ("torchscript", "with_extras", "without_extras")}
    torch.jit.trace(OpenAIArchive(model), torch.ones(2)).save(paths["torchscript"])
    archived = torch.jit.load(paths["torchscript"]).state_dict()
    torch.save(dict(archived), paths["with_extras"])
    torch.save({k: v for k, v in archived.items() if k not in OPENAI_ONLY_KEYS}, paths["without_extras"])
    return model.float(), paths


def window_logits(model, image, queries):
    """First CDAM window logits (B, Q, g, g) of ``model``'s vision tower, and the argmax labels."""
    segmentor = CDAMSegmentor(DenseCLIPEncoder(model.visual), crop=64, stride=32, alpha=0.0)
    with torch.no_grad():
        result = segmentor(image, (64, 96), queries)
    return result.logits, result.scores.argmax(0)


class RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class LogCapture:
    """Every message logged anywhere while active: at the root logger and at loggers that do not
    propagate to it (Detectron2's ``setup_logger``, run by earlier tests, turns propagation off)."""

    def __enter__(self):
        self.handler = RecordingHandler()
        self.loggers = [logging.getLogger()] + [
            logger for logger in logging.Logger.manager.loggerDict.values()
            if isinstance(logger, logging.Logger) and not logger.propagate]
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.DEBUG)
            logger.addHandler(self.handler)
        return self.handler.messages

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels):
            logger.removeHandler(self.handler)
            logger.setLevel(level)


def is_quick_gelu(model) -> bool:
    return isinstance(model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


class TestOpenAICheckpoints(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.source, cls.paths = openai_checkpoints(cls.folder.name)
        generator = torch.Generator().manual_seed(0)
        cls.image = torch.randn(3, 64, 96, generator=generator)
        cls.queries = TextQueries(F.normalize(torch.randn(5, 32, generator=generator), dim=-1),
                                  F.normalize(torch.randn(7, 32, generator=generator), dim=-1), tuple(range(5)), 5)

    @classmethod
    def tearDownClass(cls):
        cls.folder.cleanup()

    def test_every_container_gets_quick_gelu_and_the_same_labels(self):
        expected_logits, expected_labels = window_logits(self.source, self.image, self.queries)
        self.assertGreater(len(expected_labels.unique()), 1)  # labels that can differ
        tokens = open_clip.get_tokenizer(TINY)(["a photo of a cat.", "a dog"])
        for container, path in self.paths.items():
            with LogCapture() as messages:
                model, _, identity = build_clip(TINY, path)  # no flag
            self.assertTrue(is_quick_gelu(model), container)
            self.assertIn("quickgelu", identity)
            self.assertFalse([m for m in messages if "initialized randomly" in m or "cannot be told" in m],
                             container)
            logits, labels = window_logits(model, self.image, self.queries)
            self.assertTrue(torch.equal(logits, expected_logits), container)
            self.assertTrue(torch.equal(labels, expected_labels), container)
            with torch.no_grad():
                self.assertTrue(torch.equal(model.encode_text(tokens), self.source.encode_text(tokens)), container)
        # the activation matters: the same weights under GELU give other logits
        gelu_model = build_clip(TINY, "random")[0]
        gelu_model.load_state_dict(self.source.state_dict())
        self.assertFalse(is_quick_gelu(gelu_model))
        self.assertFalse(torch.equal(window_logits(gelu_model, self.image, self.queries)[0], expected_logits))

    def test_ambiguous_state_dict_warns_and_force_flag_fixes_it(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "openai_fp32.pt")
            torch.save(self.source.state_dict(), path)  # OpenAI weights converted to fp32: nothing tells
            with LogCapture() as messages:
                model = build_clip(TINY, path)[0]
            self.assertFalse(is_quick_gelu(model))  # follows the model config
            self.assertTrue([m for m in messages if "cannot be told" in m and "MODEL.CDAM.FORCE_QUICK_GELU" in m
                             and path in m], messages)
            with LogCapture() as messages:
                forced = build_clip(TINY, path, force_quick_gelu=True)[0]
            self.assertTrue(is_quick_gelu(forced))
            self.assertFalse([m for m in messages if "cannot be told" in m])
            self.assertTrue(torch.equal(window_logits(forced, self.image, self.queries)[1],
                                        window_logits(self.source, self.image, self.queries)[1]))

    def test_random_init_is_the_only_run_that_says_so(self):
        with LogCapture() as messages:
            build_clip(TINY, "random")
        self.assertTrue([m for m in messages if m.startswith(f"CLIP {TINY}: weights random")])
        if "initialized randomly" in inspect.getsource(open_clip.factory):  # open_clip >= 3 says so
            self.assertTrue([m for m in messages if "initialized randomly" in m])  # the capture sees its line


class TestOpenClipCheckpoints(unittest.TestCase):
    def test_open_clip_state_dict_follows_its_config(self):
        register_tiny_configs()
        with tempfile.TemporaryDirectory() as folder:
            for name, quick_gelu in [(TINY, False), (f"{TINY}-quickgelu", True)]:
                source = build_clip(name, "random", seed=3)[0]
                for suffix in ("pt", "safetensors"):
                    path = os.path.join(folder, f"{name}.{suffix}")
                    if suffix == "pt":
                        torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
                    else:
                        from safetensors.torch import save_file

                        save_file(source.state_dict(), path)
                    with LogCapture() as messages:
                        model = build_clip(name, path)[0]
                    self.assertEqual(is_quick_gelu(model), quick_gelu, path)
                    self.assertTrue(torch.equal(model.visual.proj, source.visual.proj))
                    warned = [m for m in messages if "cannot be told" in m and "FORCE_QUICK_GELU" in m]
                    self.assertEqual(bool(warned), not quick_gelu, messages)  # only a GELU config is ambiguous
                    self.assertFalse([m for m in messages if "initialized randomly" in m])

    def test_damaged_pickled_or_unfitting_files_name_themselves(self):
        register_tiny_configs()
        source = build_clip(TINY, "random")[0]
        with tempfile.TemporaryDirectory() as folder:
            truncated = os.path.join(folder, "truncated.pt")
            torch.save(source.state_dict(), truncated)
            truncate_half(truncated)
            pickled = os.path.join(folder, "pickled.pt")
            torch.save({"state_dict": source.state_dict(), "optimizer": logging.Formatter()}, pickled)
            for path, error in ((truncated, WeightsFileError), (pickled, PickledWeightsError)):
                with self.assertRaisesRegex(error, f"'{path}', given by MODEL.CDAM.CLIP_WEIGHTS"):
                    build_clip(TINY, path)
            openai_model, paths = openai_checkpoints(folder)
            with self.assertRaisesRegex(ValueError, "does not fit MODEL.CDAM.CLIP_MODEL 'ViT-B-16'"):
                build_clip("ViT-B-16", paths["torchscript"])

    def test_fingerprint_follows_content_and_paths_expand_user(self):
        with tempfile.TemporaryDirectory() as home:
            path = os.path.join(home, "weights.pt")
            torch.save({"w": torch.zeros(1000)}, path)
            stat = os.stat(path)
            first = resolve_clip_weights("ViT-B-16", path).identity
            torch.save({"w": torch.ones(1000)}, path)  # same size, same mtime afterwards
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            self.assertEqual(os.path.getsize(path), stat.st_size)
            second = resolve_clip_weights("ViT-B-16", path).identity
            self.assertNotEqual(first, second)
            self.assertIn(file_fingerprint(path), second)
            old_home = os.environ.get("HOME")
            os.environ["HOME"] = home
            try:
                resolved = resolve_clip_weights("ViT-B-16", "~/weights.pt")
            finally:
                if old_home is None:
                    del os.environ["HOME"]
                else:
                    os.environ["HOME"] = old_home
            self.assertEqual((resolved.path, resolved.identity), (path, second))


@requires_detectron2
class TestCDAMCheckpointRoundTrip(unittest.TestCase):
    def test_detectron2_checkpoint_loads_back_strictly(self):
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model

        from cdam_d2.engine.checkpoint import CoveringCheckpointer

        register_tiny_configs()
        with tempfile.TemporaryDirectory() as folder:
            paths = openai_checkpoints(folder)[1]

            def cdam(*opts):
                return build_model(toy_cfg(CDAM_TOY_CONFIG, "MODEL.CDAM.CLIP_MODEL", TINY, *opts))

            with LogCapture() as messages:
                model = cdam("MODEL.CDAM.CLIP_WEIGHTS", paths["torchscript"])
            self.assertFalse([m for m in messages if "initialized randomly" in m])
            state = model.state_dict()
            storages = [value.data_ptr() for value in state.values()]
            self.assertEqual(len(storages), len(set(storages)))  # every weight held once
            self.assertTrue(any(key.startswith("segmentor.encoder.visual.") for key in state))
            self.assertFalse(any(key.startswith("clip_model.visual.") for key in state))
            DetectionCheckpointer(model, save_dir=folder).save("cdam")
            fresh = cdam("MODEL.CDAM.CLIP_WEIGHTS", "random", "MODEL.CDAM.SEED", "7")
            self.assertFalse(torch.equal(fresh.segmentor.encoder.visual.proj, model.segmentor.encoder.visual.proj))
            CoveringCheckpointer(fresh).load(os.path.join(folder, "cdam.pth"))
            for key, value in fresh.state_dict().items():
                self.assertTrue(torch.equal(value, state[key]), key)


if __name__ == "__main__":
    unittest.main()
