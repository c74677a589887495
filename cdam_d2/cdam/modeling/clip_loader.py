"""Build an open_clip CLIP model with its weights (the only place that loads CLIP weights).

``weights`` (config key ``MODEL.CDAM.CLIP_WEIGHTS``) is one of:

- an open_clip pretrained tag of the model, e.g. ``"openai"`` (downloaded by open_clip into its cache);
- a local checkpoint file (``~`` is expanded): an OpenAI TorchScript ``.pt``, a ``torch.save`` state dict or a
  ``.safetensors`` file in open_clip's (= OpenAI's) key layout;
- ``"random"`` (or ``""``): seeded random initialisation, for tests and benchmarks.

The string is read by ``cdam_d2.weights.resolve_weights`` and a file by ``cdam_d2.weights.read_weights_file``: a
TorchScript archive with ``torch.jit.load`` (TorchScript's own deserializer: modules and tensors, no Python pickle
of arbitrary classes; only the tensors of its ``state_dict()`` are kept), safetensors with ``safetensors``,
anything else with ``torch.load(weights_only=True)``.

Activation: OpenAI trained its CLIPs with QuickGELU, open_clip models follow their model config. A file is
recognised as OpenAI's when it is a TorchScript archive, carries OpenAI's ``input_resolution`` /
``context_length`` / ``vocab_size`` entries, or is stored as OpenAI stores its weights (fp16 linear and conv
weights, fp32 LayerNorms). A plain state dict otherwise cannot tell; it follows the model config, with a warning
naming ``MODEL.CDAM.FORCE_QUICK_GELU`` when that config uses GELU.

``model_name`` is an open_clip model name (``open_clip.list_models()``) or ``"tiny:<open_clip name>"``: that
architecture shrunk to a few narrow layers (same patch size and family), for fast tests with random weights.
"""
import copy
import hashlib
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from ...weights import WeightsError, read_weights_file, resolve_weights

logger = logging.getLogger(__name__)

WEIGHTS_KEY = "MODEL.CDAM.CLIP_WEIGHTS"
TINY_PREFIX = "tiny:"
# Shrunk towers of "tiny:<name>" models: enough layers for every base variant (GEM uses up to 6 blocks).
TINY_VISION = {"layers": 3, "width": 64, "head_width": 16}
TINY_TEXT = {"layers": 1, "width": 32, "heads": 2}
TINY_EMBED_DIM = 32
OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")
# OpenAI's checkpoints hold these in fp16 and the LayerNorms in fp32 (their `convert_weights`).
OPENAI_HALF_KEYS = ("visual.conv1.weight", "visual.proj", "text_projection")
OPENAI_FLOAT_KEYS = ("visual.ln_pre.weight", "ln_final.weight")
FORCE_FLAG = "MODEL.CDAM.FORCE_QUICK_GELU"


@dataclass(frozen=True)
class ResolvedWeights:
    """Where CLIP weights come from.

    Attributes:
        path: local checkpoint file, or None for random initialisation.
        identity: string that changes whenever the weights may change (used in cache keys).
        quick_gelu: whether the weights were trained with QuickGELU, when known from the tag or the file (or
            forced); None when the file cannot tell (the model config decides).
        reason: why ``quick_gelu`` is what it is (for the log).
    """

    path: Optional[str]
    identity: str
    quick_gelu: Optional[bool]
    reason: str = ""


@dataclass
class Checkpoint:
    """A CLIP checkpoint file, read once.

    Attributes:
        state_dict: its tensors (lazily memory-mapped for ``torch.save`` zip files), ``module.`` stripped,
            OpenAI's extra entries dropped.
        openai_reason: why the file is an OpenAI checkpoint, or None when it cannot be told.
        readable_by_open_clip: open_clip's own loader reads the file as it is (not a TorchScript archive, no
            OpenAI extra entries, no ``{"model": ...}`` wrapper).
    """

    state_dict: Dict[str, torch.Tensor]
    openai_reason: Optional[str]
    readable_by_open_clip: bool


def tiny_model_config(model_name: str) -> Dict:
    """The open_clip config of ``model_name`` with narrow, shallow towers (patch size and image size kept)."""
    import open_clip

    base = open_clip.get_model_config(model_name)
    if base is None:
        raise ValueError(f"MODEL.CDAM.CLIP_MODEL 'tiny:{model_name}': {model_name!r} is not an open_clip model "
                         f"(see open_clip.list_models())")
    config = copy.deepcopy(base)
    config["embed_dim"] = TINY_EMBED_DIM
    config["vision_cfg"].update(TINY_VISION)
    config["text_cfg"].update(TINY_TEXT)
    return config


_FINGERPRINTS: Dict[Tuple, str] = {}


def file_fingerprint(path: str) -> str:
    """SHA-256 of the file's content (memoised per process by path, size, mtime, ctime and inode; ~0.2 s per
    300 MB), so a replaced or rewritten file never passes for the old one."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def read_checkpoint(path: str) -> Checkpoint:
    """Read a CLIP checkpoint file as data (``cdam_d2.weights.read_weights_file``: no Python objects
    unpickled; the tensors of a ``torch.save`` zip file memory-mapped).

    Raises:
        WeightsFileError: the file cannot be read (damaged, truncated, or pickled objects beyond tensors).
        ValueError: the file holds no state dict.
    """
    state_dict, container = read_weights_file(path, WEIGHTS_KEY, mmap=True, what_to_do=(
        "download it again; a Python-pickled checkpoint is refused: save a plain state dict with "
        "torch.save(model.state_dict(), path)"))
    wrapper = None
    for key in ("state_dict", "model"):
        if isinstance(state_dict, dict) and isinstance(state_dict.get(key), dict):
            state_dict, wrapper = state_dict[key], key
            break
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"{WEIGHTS_KEY} {path!r} holds a {type(state_dict).__name__}, not a state dict")
    state_dict = {key[len("module."):] if key.startswith("module.") else key: value
                  for key, value in state_dict.items()}
    extras = [key for key in OPENAI_ONLY_KEYS if key in state_dict]
    if container == "torchscript":
        reason = "an OpenAI TorchScript archive"
    elif extras:
        reason = f"a state dict with OpenAI's {'/'.join(extras)} entries"
    elif _has_openai_half_layout(state_dict):
        reason = "stored as OpenAI stores its weights (fp16 linear/conv weights, fp32 LayerNorms)"
    else:
        reason = None
    state_dict = {key: value for key, value in state_dict.items() if key not in OPENAI_ONLY_KEYS}
    return Checkpoint(state_dict, reason, container != "torchscript" and not extras and wrapper != "model")


def _has_openai_half_layout(state_dict: Dict[str, torch.Tensor]) -> bool:
    def dtype(key):
        value = state_dict.get(key)
        return value.dtype if isinstance(value, torch.Tensor) else None

    return (all(dtype(key) == torch.float16 for key in OPENAI_HALF_KEYS)
            and all(dtype(key) == torch.float32 for key in OPENAI_FLOAT_KEYS))


def resolve_clip_weights(model_name: str, weights: str, force_quick_gelu: bool = False,
                         cache_dir: Optional[str] = None) -> ResolvedWeights:
    """Turn a weights spec (tag, file or "random") into a local file, downloading a tag through open_clip.

    The activation is decided here for tags (the tag's ``quick_gelu``) and forced runs; for files it is read
    from the file by ``build_clip``.

    Raises:
        FileNotFoundError: ``weights`` looks like a path but no such file exists.
        ValueError: ``weights`` is neither a file nor a pretrained tag of ``model_name``.
        WeightsError: the tag's weights cannot be downloaded (e.g. offline); the message says how to pass a file.
    """
    import open_clip

    forced = True if force_quick_gelu else None
    source = resolve_weights(weights, WEIGHTS_KEY)
    if source.kind == "random":
        return ResolvedWeights(None, f"{model_name}|random", forced, f"forced by {FORCE_FLAG}" if forced else "")
    if model_name.startswith(TINY_PREFIX):
        raise ValueError(f"MODEL.CDAM.CLIP_MODEL {model_name!r} is a tiny test model; set "
                         f"{WEIGHTS_KEY} to 'random' (got {weights!r})")
    if source.kind == "file":
        return ResolvedWeights(source.value, f"{model_name}|sha256:{file_fingerprint(source.value)}", forced,
                               f"forced by {FORCE_FLAG}" if forced else "")
    weights = source.value
    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, weights)
    if not pretrained_cfg:
        raise ValueError(
            f"MODEL.CDAM.CLIP_WEIGHTS {weights!r} is neither a file nor an open_clip pretrained tag of "
            f"{model_name!r} (tags: {open_clip.list_pretrained_tags_by_model(model_name)}); "
            f"use 'random' for random weights")
    try:
        path = open_clip.download_pretrained(pretrained_cfg, cache_dir=cache_dir)
    except Exception as error:  # network and hub errors come in many types
        raise WeightsError(
            f"Could not obtain the open_clip weights {model_name!r} / {weights!r} ({error}). When offline, "
            f"download the checkpoint elsewhere (e.g. OpenAI's ViT-B-16.pt) and pass it as a local file: "
            f"MODEL.CDAM.CLIP_WEIGHTS /path/to/file.pt") from error
    if not path:
        raise WeightsError(f"open_clip found no download source for {model_name!r} / {weights!r}; "
                           f"pass a local file: MODEL.CDAM.CLIP_WEIGHTS /path/to/file.pt")
    # open_clip >= 2.27 marks QuickGELU tags; older versions load every "openai" tag as QuickGELU.
    quick_gelu = force_quick_gelu or bool(pretrained_cfg.get("quick_gelu", weights == "openai"))
    return ResolvedWeights(path, f"{model_name}|sha256:{file_fingerprint(path)}", quick_gelu,
                           f"open_clip tag {weights!r}")


def _factory_reads_weights_only() -> bool:
    """Whether ``open_clip.create_model`` takes ``weights_only`` (recent open_clip); older versions leave
    ``torch.load`` at its default, so their files are loaded here instead."""
    import open_clip

    return "weights_only" in inspect.signature(open_clip.create_model).parameters


def _config_quick_gelu(model_name: str) -> bool:
    import open_clip

    return bool((open_clip.get_model_config(model_name) or {}).get("quick_gelu", False))


def _model_from_config(config: Dict, source: str, quick_gelu: bool):
    """A standard open_clip ``CLIP`` of ``config`` (the class ``create_model`` builds for such configs),
    with QuickGELU where the config or ``quick_gelu`` asks for it."""
    import open_clip

    config = copy.deepcopy(config)
    config["quick_gelu"] = config.get("quick_gelu", False) or quick_gelu
    if (config.pop("custom_text", False) or "hf_model_name" in config.get("text_cfg", {})
            or "timm_model_name" in config.get("vision_cfg", {})):
        raise ValueError(f"{source}: OpenAI checkpoints fit standard CLIP models (open_clip ViT vision tower and "
                         f"text transformer); this model config has a custom text or timm tower")
    return open_clip.CLIP(**config)


def _load_strictly(model, state_dict: Dict[str, torch.Tensor], mismatch: str):
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{mismatch}: {str(error)[:600]}") from error
    if missing or unexpected:
        raise ValueError(f"{mismatch}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def build_clip(model_name: str = "ViT-B-16", weights: str = "openai", force_quick_gelu: bool = False,
               seed: int = 0, cache_dir: Optional[str] = None):
    """Create an open_clip CLIP model in eval mode (fp32, CPU) and its tokenizer.

    Files open_clip's loader reads as they are go through ``open_clip.create_model(name, pretrained=file)``
    (``weights_only=True``); TorchScript archives, state dicts with OpenAI's extra entries or a ``model`` wrapper,
    and every file when open_clip's factory takes no ``weights_only`` are read here and loaded strictly into the
    model of ``model_name``'s config. Either way no randomly initialised model is reported, and the model fits
    the file exactly (else a ValueError names both).

    Returns:
        (model, tokenizer, weights_identity)
    """
    import open_clip

    resolved = resolve_clip_weights(model_name, weights, force_quick_gelu, cache_dir)
    base_name = model_name[len(TINY_PREFIX):] if model_name.startswith(TINY_PREFIX) else model_name
    if not model_name.startswith(TINY_PREFIX) and model_name not in open_clip.list_models():
        raise ValueError(f"MODEL.CDAM.CLIP_MODEL {model_name!r} is not an open_clip model "
                         f"(see open_clip.list_models()) nor 'tiny:<name>'")
    mismatch = f"MODEL.CDAM.CLIP_WEIGHTS {resolved.path!r} does not fit MODEL.CDAM.CLIP_MODEL {model_name!r}"
    checkpoint = read_checkpoint(resolved.path) if resolved.path else None
    quick_gelu, reason = resolved.quick_gelu, resolved.reason
    if quick_gelu is None and checkpoint is not None and checkpoint.openai_reason:
        quick_gelu, reason = True, f"OpenAI weights: {checkpoint.openai_reason}"
    if quick_gelu is None:
        quick_gelu = _config_quick_gelu(base_name) if not model_name.startswith(TINY_PREFIX) else False
        reason = f"model config {model_name!r}"
        if checkpoint is not None and not quick_gelu:
            logger.warning(
                "MODEL.CDAM.CLIP_WEIGHTS %s is a state dict in open_clip's (= OpenAI's) key layout: whether its "
                "weights were trained with QuickGELU (OpenAI) or GELU cannot be told from the file, so the GELU "
                "of model config %r is used. If it holds OpenAI weights, set %s True (or use '%s-quickgelu').",
                resolved.path, model_name, FORCE_FLAG, model_name)
    logger.info("CLIP %s: weights %s, %s (%s)", model_name, resolved.path or f"random (seed {seed})",
                "QuickGELU" if quick_gelu else "GELU", reason)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights are reproducible, so cached text embeddings stay valid
        if model_name.startswith(TINY_PREFIX):
            model = _model_from_config(tiny_model_config(base_name), model_name, quick_gelu)
        elif checkpoint is None:
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
        elif checkpoint.readable_by_open_clip and _factory_reads_weights_only():
            try:
                model = open_clip.create_model(model_name, pretrained=resolved.path, force_quick_gelu=quick_gelu,
                                               weights_only=True, cache_dir=cache_dir)
            except (RuntimeError, AssertionError, KeyError) as error:  # open_clip's mismatch reports
                raise ValueError(f"{mismatch}: {str(error)[:600]}") from error
        else:
            model = _model_from_config(open_clip.get_model_config(model_name), mismatch, quick_gelu)
            _load_strictly(model, checkpoint.state_dict, mismatch)
    identity = resolved.identity + (f"|seed{seed}" if resolved.path is None else "")
    identity += "|quickgelu" if quick_gelu else "|gelu"
    return model.eval(), open_clip.get_tokenizer(base_name), identity
