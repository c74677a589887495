"""Text embeddings of query names: prompt-template ensembles (spec §2.1), cached on disk."""
import contextlib
import hashlib
import logging
import os
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

OPENAI_IMAGENET = "openai_imagenet"


def load_templates(source: str = OPENAI_IMAGENET) -> List[str]:
    """Prompt templates with a ``{}`` placeholder.

    Args:
        source: ``"openai_imagenet"`` (the 80 templates of ``open_clip.OPENAI_IMAGENET_TEMPLATES``, the
            released list) or a text file with one template per line.
    """
    if source == OPENAI_IMAGENET:
        import open_clip

        return [template("{}") for template in open_clip.OPENAI_IMAGENET_TEMPLATES]
    if not os.path.isfile(source):
        raise FileNotFoundError(f"MODEL.CDAM.TEMPLATES {source!r} is neither {OPENAI_IMAGENET!r} nor a file")
    with open(source, encoding="utf-8") as f:
        templates = [line.rstrip("\n") for line in f if line.strip()]
    bad = [template for template in templates if "{}" not in template]
    if bad or not templates:
        raise ValueError(f"MODEL.CDAM.TEMPLATES {source!r}: every line needs a '{{}}' placeholder (bad: {bad[:3]})")
    return templates


def cache_key(model_identity: str, names: Sequence[str], templates: Sequence[str]) -> str:
    """Hash of everything the embeddings depend on: model + weights identity, names and templates."""
    payload = "\x1f".join([model_identity, "\x1e".join(names), "\x1e".join(templates)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


class TextEmbedder:
    """Unit-norm text embeddings, one per name: the renormalized mean of the normalized embeddings of the
    name filled into every template. Results are cached in ``cache_dir`` (one file per name list), so a
    second run with the same model, weights, names and templates encodes no text."""

    def __init__(self, clip_model: torch.nn.Module, tokenizer, model_identity: str, templates: Sequence[str],
                 cache_dir: Optional[str] = None, batch_size: int = 256):
        """
        Args:
            clip_model: open_clip CLIP model (uses ``encode_text``).
            tokenizer: its open_clip tokenizer.
            model_identity: string identifying model and weights (part of the cache key).
            cache_dir: folder of cached embeddings; None or "" disables the disk cache.
        """
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.model_identity = model_identity
        self.templates = list(templates)
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None
        self.batch_size = batch_size

    def __call__(self, names: Sequence[str], autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """(Q,) names -> (Q, E) fp32 unit-norm embeddings on the model's device."""
        names = list(names)
        device = next(self.clip_model.parameters()).device
        key = cache_key(self.model_identity, names, self.templates)
        path = os.path.join(self.cache_dir, f"{key}.pt") if self.cache_dir else None
        if path and os.path.isfile(path):
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("names") == names and cached.get("templates") == self.templates:
                return cached["embeddings"].to(device)
            logger.warning("Ignoring text-embedding cache %s: it belongs to other names/templates", path)
        logger.info("Encoding %d text queries x %d templates%s", len(names), len(self.templates),
                    f" (cached in {path})" if path else "")
        embeddings = self._encode(names, device, autocast_dtype)
        if path:
            os.makedirs(self.cache_dir, exist_ok=True)
            temporary = f"{path}.{os.getpid()}.tmp"
            torch.save({"names": names, "templates": self.templates, "embeddings": embeddings.cpu()}, temporary)
            os.replace(temporary, path)  # atomic, so concurrent processes never read a partial file
        return embeddings

    @torch.no_grad()
    def _encode(self, names: List[str], device, autocast_dtype: Optional[torch.dtype]) -> torch.Tensor:
        prompts = [template.replace("{}", name) for name in names for template in self.templates]
        autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        features = []
        with autocast:
            for start in range(0, len(prompts), self.batch_size):
                tokens = self.tokenizer(prompts[start:start + self.batch_size]).to(device)
                features.append(F.normalize(self.clip_model.encode_text(tokens).float(), dim=-1))
        per_prompt = torch.cat(features).reshape(len(names), len(self.templates), -1)
        return F.normalize(per_prompt.mean(dim=1), dim=-1)
