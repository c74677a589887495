"""Build an open_clip CLIP model and resolve its weights (the only place that loads CLIP weights).

``weights`` (config key ``MODEL.CDAM.CLIP_WEIGHTS``) is one of:

- an open_clip pretrained tag of the model, e.g. ``"openai"`` (downloaded by open_clip into its cache);
- a local checkpoint file: an OpenAI TorchScript ``.pt``, a ``torch.save`` state dict or a ``.safetensors`` file
  (open_clip / OpenAI key names);
- ``"random"`` (or ``""``): seeded random initialisation, for tests and benchmarks.

``model_name`` is an open_clip model name (``open_clip.list_models()``) or ``"tiny:<open_clip name>"``: that
architecture shrunk to a few narrow layers (same patch size and family), for fast tests with random weights.
"""
import copy
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Dict, Optional

import torch

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS = ("", "random")
TINY_PREFIX = "tiny:"
# Shrunk towers of "tiny:<name>" models: enough layers for every base variant (GEM uses up to 6 blocks).
TINY_VISION = {"layers": 3, "width": 64, "head_width": 16}
TINY_TEXT = {"layers": 1, "width": 32, "heads": 2}
TINY_EMBED_DIM = 32
OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class ResolvedWeights:
    """Where CLIP weights come from.

    Attributes:
        path: local checkpoint file, or None for random initialisation.
        identity: string that changes whenever the weights may change (used in cache keys).
        quick_gelu: whether the weights were trained with QuickGELU (OpenAI models were).
    """

    path: Optional[str]
    identity: str
    quick_gelu: bool


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


def _is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def resolve_clip_weights(model_name: str, weights: str, force_quick_gelu: bool = False,
                         cache_dir: Optional[str] = None) -> ResolvedWeights:
    """Turn a weights spec (tag, file or "random") into a local file, downloading a tag through open_clip.

    Raises:
        FileNotFoundError: ``weights`` looks like a path but no such file exists.
        ValueError: ``weights`` is neither a file nor a pretrained tag of ``model_name``.
        RuntimeError: the tag's weights cannot be downloaded (e.g. offline); the message says how to pass a file.
    """
    import open_clip

    if weights in RANDOM_WEIGHTS:
        return ResolvedWeights(None, f"{model_name}|random", force_quick_gelu)
    if model_name.startswith(TINY_PREFIX):
        raise ValueError(f"MODEL.CDAM.CLIP_MODEL {model_name!r} is a tiny test model; set "
                         f"MODEL.CDAM.CLIP_WEIGHTS to 'random' (got {weights!r})")
    if os.path.isfile(weights):
        path = os.path.abspath(weights)
        stat = os.stat(path)
        quick_gelu = force_quick_gelu or _is_torchscript_archive(path)
        return ResolvedWeights(path, f"{model_name}|file:{path}|{stat.st_size}|{stat.st_mtime_ns}", quick_gelu)
    if os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise FileNotFoundError(f"MODEL.CDAM.CLIP_WEIGHTS: checkpoint file {weights!r} does not exist")

    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, weights)
    if not pretrained_cfg:
        raise ValueError(
            f"MODEL.CDAM.CLIP_WEIGHTS {weights!r} is neither a file nor an open_clip pretrained tag of "
            f"{model_name!r} (tags: {open_clip.list_pretrained_tags_by_model(model_name)}); "
            f"use 'random' for random weights")
    try:
        path = open_clip.download_pretrained(pretrained_cfg, cache_dir=cache_dir)
    except Exception as error:  # network and hub errors come in many types
        raise RuntimeError(
            f"Could not obtain the open_clip weights {model_name!r} / {weights!r} ({error}). When offline, "
            f"download the checkpoint elsewhere (e.g. OpenAI's ViT-B-16.pt) and pass it as a local file: "
            f"MODEL.CDAM.CLIP_WEIGHTS /path/to/file.pt") from error
    if not path:
        raise RuntimeError(f"open_clip found no download source for {model_name!r} / {weights!r}; "
                           f"pass a local file: MODEL.CDAM.CLIP_WEIGHTS /path/to/file.pt")
    quick_gelu = force_quick_gelu or bool(pretrained_cfg.get("quick_gelu", False))
    return ResolvedWeights(path, f"{model_name}|tag:{weights}", quick_gelu)


def load_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """State dict of a CLIP checkpoint file (TorchScript, safetensors, or ``torch.save`` with weights_only)."""
    if _is_torchscript_archive(path):
        state_dict = torch.jit.load(path, map_location="cpu").state_dict()
    elif path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state_dict = load_file(path, device="cpu")
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper_key in ("state_dict", "model"):
            if isinstance(state_dict, dict) and isinstance(state_dict.get(wrapper_key), dict):
                state_dict = state_dict[wrapper_key]
    if not isinstance(state_dict, dict):
        raise ValueError(f"MODEL.CDAM.CLIP_WEIGHTS {path!r} holds a {type(state_dict).__name__}, not a state dict")
    return {key[len("module."):] if key.startswith("module.") else key: value
            for key, value in state_dict.items() if key not in OPENAI_ONLY_KEYS}


def build_clip(model_name: str = "ViT-B-16", weights: str = "openai", force_quick_gelu: bool = False,
               seed: int = 0, cache_dir: Optional[str] = None):
    """Create an open_clip CLIP model in eval mode (fp32, CPU) and its tokenizer.

    Returns:
        (model, tokenizer, weights_identity)
    """
    import open_clip

    resolved = resolve_clip_weights(model_name, weights, force_quick_gelu, cache_dir)
    logger.info("CLIP %s: weights %s%s", model_name, resolved.path or f"random (seed {seed})",
                ", QuickGELU" if resolved.quick_gelu else "")
    state_dict = load_clip_state_dict(resolved.path) if resolved.path else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights are reproducible, so cached text embeddings stay valid
        if model_name.startswith(TINY_PREFIX):
            base_name = model_name[len(TINY_PREFIX):]
            config = tiny_model_config(base_name)
            config["quick_gelu"] = config.get("quick_gelu", False) or resolved.quick_gelu
            model = open_clip.CLIP(**config)
        else:
            base_name = model_name
            if model_name not in open_clip.list_models():
                raise ValueError(f"MODEL.CDAM.CLIP_MODEL {model_name!r} is not an open_clip model "
                                 f"(see open_clip.list_models()) nor 'tiny:<name>'")
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=resolved.quick_gelu)
    if state_dict is not None:
        mismatch = f"MODEL.CDAM.CLIP_WEIGHTS {resolved.path!r} does not fit MODEL.CDAM.CLIP_MODEL {model_name!r}"
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as error:  # shape mismatches
            raise ValueError(f"{mismatch}: {str(error)[:600]}") from error
        if missing or unexpected:
            raise ValueError(f"{mismatch}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    identity = f"{resolved.identity}|seed{seed}" if resolved.path is None else resolved.identity
    if resolved.quick_gelu:
        identity += "|quickgelu"
    return model.eval(), open_clip.get_tokenizer(base_name), identity

