"""Pretrained weights: DeiT ImageNet checkpoints (mapped onto ClusterCAM as the release does) and official
ClusterCAM checkpoints (converted key by key)."""
import logging

import torch

from ...weights import WeightsError, read_weights_file, resolve_weights
from .network import interpolate_patch_pos_embed

__all__ = [
    "NOT_PRETRAINED_PREFIXES",
    "deit_to_clustercam",
    "load_deit_state_dict",
    "load_deit_weights",
    "convert_official_checkpoint",
]

logger = logging.getLogger(__name__)

PRETRAINED_KEY = "MODEL.CLUSTERCAM.PRETRAINED"
DEIT_DOWNLOAD_HINT = ("download deit_small_patch16_224-cd65a155.pth again "
                      "(https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth)")

# Parameters that ClusterCAM always trains from scratch (the DeiT checkpoint has no source for them).
NOT_PRETRAINED_PREFIXES = ("head.", "decoder.")
NOT_PRETRAINED_SUFFIXES = ("st_attn.proj_st.weight", "st_attn.proj_st.bias", "st_attn.mix_param")

# ClusterCAM block parameter -> DeiT block parameter (every copy of a DeiT module listed).
_BLOCK_MAPPING = {
    "st_attn.ln_pat": "norm1",
    "st_attn.ln_pat2": "norm1",
    "st_attn.ln_cls": "norm1",
    "st_attn.ln_st": "norm1",
    "st_attn.qkv": "attn.qkv",
    "st_attn.qkv_stsa": "attn.qkv",
    "st_attn.proj": "attn.proj",
    "st_attn.proj_cls": "attn.proj",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def _pos_grid_side(num_positions):
    side = int(round(num_positions ** 0.5))
    if side * side != num_positions:
        raise ValueError(f"DeiT pos_embed has {num_positions} patch positions, which is not a square grid")
    return side


def deit_to_clustercam(deit_state, target_state):
    """Map a DeiT state dict onto ClusterCAM parameter names and shapes.

    Args:
        deit_state: DeiT/timm ``VisionTransformer`` state dict (``cls_token`` (1,1,C), ``pos_embed``
            (1,1+g²,C), ``patch_embed.proj.*``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.*}``,
            ``norm.*``; ``head.*`` is ignored).
        target_state: ``ClusterCAMNet.state_dict()`` (used for names, K and shapes).

    Returns:
        dict covering every target key except ``NOT_PRETRAINED_*``. Raises ``KeyError`` naming the
        missing DeiT keys, or ``ValueError`` on a shape mismatch.
    """
    num_classes = target_state["cls_token"].shape[1]
    mapped, missing = {}, []

    def take(target_key, source_key):
        if source_key in deit_state:
            mapped[target_key] = deit_state[source_key]
        else:
            missing.append(source_key)

    for key in target_state:
        if key.startswith(NOT_PRETRAINED_PREFIXES) or key.endswith(NOT_PRETRAINED_SUFFIXES):
            continue
        if key.startswith("blocks."):
            index, rest = key[len("blocks."):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            if module not in _BLOCK_MAPPING:
                raise KeyError(f"no DeiT source defined for ClusterCAM parameter {key}")
            take(key, f"blocks.{index}.{_BLOCK_MAPPING[module]}.{param}")
        elif key not in ("cls_token", "pos_embed"):
            take(key, key)
    for key in ("cls_token", "pos_embed"):
        if key not in deit_state:
            missing.append(key)
    if missing:
        raise KeyError(f"DeiT checkpoint lacks {len(missing)} keys needed by ClusterCAM, e.g. {missing[:5]}; "
                       "is it a DeiT/ViT checkpoint with the configured DEPTH?")
    mapped["cls_token"] = deit_state["cls_token"][:, :1].repeat(1, num_classes, 1)
    deit_pos = deit_state["pos_embed"]
    patch_pos = deit_pos[:, 1:]
    target_side = _pos_grid_side(target_state["pos_embed"].shape[1] - num_classes)
    if _pos_grid_side(patch_pos.shape[1]) != target_side:
        patch_pos = interpolate_patch_pos_embed(patch_pos.float(), (target_side, target_side))
    mapped["pos_embed"] = torch.cat([deit_pos[:, :1].repeat(1, num_classes, 1), patch_pos], dim=1)
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(target_state[key].shape):
            raise ValueError(f"DeiT weight for {key} has shape {tuple(value.shape)}, ClusterCAM expects "
                             f"{tuple(target_state[key].shape)}; check EMBED_DIM/NUM_HEADS/PATCH_SIZE")
    return mapped


def load_deit_state_dict(source):
    """Read DeiT weights named by a ``MODEL.CLUSTERCAM.PRETRAINED`` string (``cdam_d2.weights.resolve_weights``).

    A local file (``~`` expanded) is read as data (``cdam_d2.weights.read_weights_file``); a ``"model"``
    sub-dict is accepted (the official ``deit_small_patch16_224-cd65a155.pth`` layout). A URL is
    downloaded into torch's hub cache and read with ``weights_only=True``; any other tag is a timm model
    name (e.g. ``deit_small_patch16_224``) whose pretrained weights timm downloads.
    """
    resolved = resolve_weights(source, PRETRAINED_KEY)
    if resolved.kind == "random":
        raise ValueError(f"{PRETRAINED_KEY} is {source!r}: there are no DeiT weights to read")
    if resolved.kind == "file":
        state, _ = read_weights_file(resolved.value, PRETRAINED_KEY, what_to_do=DEIT_DOWNLOAD_HINT)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ValueError(f"{resolved.value} does not contain a state dict")
        return state
    try:
        if resolved.is_url:
            state = torch.hub.load_state_dict_from_url(resolved.value, map_location="cpu", weights_only=True)
            return state["model"] if isinstance(state.get("model"), dict) else state
        import timm

        return timm.create_model(resolved.value, pretrained=True, num_classes=0).state_dict()
    except Exception as exc:  # network, hub and timm errors come in many types
        raise WeightsError(
            f"could not load the pretrained weights {resolved.describe()} given by {PRETRAINED_KEY} "
            f"({type(exc).__name__}: {exc}). Offline? Download deit_small_patch16_224-cd65a155.pth and set "
            f"{PRETRAINED_KEY} to its path, or set it to 'random' to start from random weights.") from exc


def load_deit_weights(net, source):
    """Load DeiT weights into a ``ClusterCAMNet``; returns the loaded keys.

    The released mapping: class tokens and class positions repeat DeiT's CLS ones K times, block parameters come
    from the DeiT modules of ``_BLOCK_MAPPING``; the rest (``NOT_PRETRAINED_*``) stays random."""
    mapped = deit_to_clustercam(load_deit_state_dict(source), net.state_dict())
    incompatible = net.load_state_dict(mapped, strict=False)
    if incompatible.unexpected_keys:
        raise RuntimeError(f"unexpected keys after DeiT mapping: {incompatible.unexpected_keys}")
    logger.info("Loaded DeiT weights from %s into %d ClusterCAM tensors; %d tensors start random "
                "(head, decoder, proj_st, mix_param).", source, len(mapped), len(incompatible.missing_keys))
    return sorted(mapped)


def convert_official_checkpoint(official_state, prefix=""):
    """Official ClusterCAM state dict (keys optionally prefixed ``module.``, or under ``"model"``) ->
    state dict for ``ClusterCAMNet``, with ``prefix`` prepended to every key (e.g. ``"net."`` for the
    Detectron2 meta-architecture)."""
    if isinstance(official_state.get("model"), dict):
        official_state = official_state["model"]
    converted = {}
    for key, value in official_state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        converted[prefix + key] = value
    return converted
