"""Text embeddings of query names: prompt-template ensembles (by default the released 80 OpenAI ImageNet templates),
cached on disk.

Encoding is truncated: with a causal attention mask, the token a prompt is pooled at (its end-of-text token)
only sees the tokens before it, so a batch of prompts runs through the text transformer at the length of its
longest prompt instead of the full context (77 tokens), with the causal mask and the positional embedding
sliced to that length. Prompts are sorted by length first, so that batches are short. Text towers without a
causal mask or without end-of-text pooling are encoded at full length by ``encode_text``.
"""
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.files import write_atomically

logger = logging.getLogger(__name__)

OPENAI_IMAGENET = "openai_imagenet"
# Name of the precision text is encoded in, part of the cache key (None: no autocast).
PRECISION_NAMES = {None: "fp32", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def load_templates(source: str = OPENAI_IMAGENET) -> List[str]:
    """Prompt templates with a ``{}`` placeholder.

    Args:
        source: ``"openai_imagenet"`` (the 80 templates of ``open_clip.OPENAI_IMAGENET_TEMPLATES``, the
            released list) or a text file with one template per line (``~`` is expanded).
    """
    if source == OPENAI_IMAGENET:
        import open_clip

        return [template("{}") for template in open_clip.OPENAI_IMAGENET_TEMPLATES]
    path = os.path.expanduser(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.CDAM.TEMPLATES {source!r} is neither {OPENAI_IMAGENET!r} nor a file")
    with open(path, encoding="utf-8") as f:
        templates = [line.rstrip("\n") for line in f if line.strip()]
    bad = [template for template in templates if "{}" not in template]
    if bad or not templates:
        raise ValueError(f"MODEL.CDAM.TEMPLATES {source!r}: every line needs a '{{}}' placeholder (bad: {bad[:3]})")
    return templates


def cache_key(model_identity: str, templates: Sequence[str]) -> str:
    """Hash of everything an embedding depends on besides its name: model + weights + precision identity and
    the templates."""
    payload = "\x1f".join([model_identity, "\x1e".join(templates)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass
class CausalTextTower:
    """An open_clip text tower whose pooled token only attends to earlier tokens.

    Attributes:
        module: the module holding ``token_embedding``, ``positional_embedding``, ``transformer``, ``attn_mask``,
            ``ln_final`` and ``text_projection``: a ``CLIP`` model, or the ``TextTransformer`` of a
            ``CustomTextCLIP``.
        pool_type: "argmax" (the end-of-text token has the largest id) or "eos" (a given end-of-sequence id).
        eos_id: the end-of-sequence id for "eos" pooling.
    """

    module: nn.Module
    pool_type: str
    eos_id: Optional[int] = None

    @classmethod
    def of(cls, model: nn.Module) -> Optional["CausalTextTower"]:
        """The causal text tower of an open_clip model, or None when truncation would change the embeddings
        (no causal mask, padding masks, a CoCa class token, pooling at the first/last position, other towers)."""
        text = getattr(model, "text", None)
        if isinstance(text, nn.Module):  # CustomTextCLIP
            if getattr(text, "cls_emb", None) is not None or getattr(text, "use_pad_mask", False):
                return None
            module, pool_type, eos_id = text, getattr(text, "pool_type", None), getattr(text, "eos_id", None)
        else:
            module = model
            pool_type, eos_id = getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None)
        if not all(isinstance(getattr(module, name, None), (nn.Module, torch.Tensor))
                   for name in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
            return None
        if pool_type not in ("argmax", "eos") or (pool_type == "eos" and eos_id is None):
            return None
        mask, length = getattr(module, "attn_mask", None), module.positional_embedding.shape[0]
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (length, length) or not mask.is_floating_point():
            return None
        causal = torch.full_like(mask, float("-inf")).triu_(1)
        return cls(module, pool_type, eos_id) if torch.equal(mask, causal) else None

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, L) token ids -> (P,) index of the token each prompt is pooled at."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        return (tokens == self.eos_id).int().argmax(dim=-1)

    def encode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(P, L) token ids and their pooled positions -> (P, E) features, equal to ``encode_text`` of the full
        context: the tokens up to the longest prompt go through the tower's own embedding, transformer (with the
        sliced causal mask), final norm and projection."""
        module, length = self.module, int(positions.max()) + 1
        cast_dtype = module.transformer.get_cast_dtype()
        hidden = module.token_embedding(tokens[:, :length]).to(cast_dtype)
        hidden = hidden + module.positional_embedding[:length].to(cast_dtype)
        mask = module.attn_mask[:length, :length] if module.attn_mask is not None else None
        hidden = module.ln_final(module.transformer(hidden, attn_mask=mask))
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
        projection = module.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Module) else pooled @ projection


class TextEmbedder:
    """Unit-norm text embeddings, one per name: the renormalized mean of the normalized embeddings of the
    name filled into every template. Embeddings are cached in ``cache_dir`` per name, in one file per
    (model, weights, precision, templates), so a later run encodes only the names no run has encoded before,
    whatever vocabularies and order came first."""

    def __init__(self, clip_model: torch.nn.Module, tokenizer, model_identity: str, templates: Sequence[str],
                 cache_dir: Optional[str] = None, batch_size: int = 256, progress: bool = True):
        """
        Args:
            clip_model: open_clip CLIP model (its text tower).
            tokenizer: its open_clip tokenizer.
            model_identity: string identifying model and weights (part of the cache key, with the precision
                each call encodes in).
            cache_dir: folder of cached embeddings (``~`` expanded); None or "" disables the disk cache.
            progress: show a progress bar while encoding.
        """
        self.clip_model = clip_model
        self.tokenizer = tokenizer
        self.model_identity = model_identity
        self.templates = list(templates)
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None
        self.batch_size = batch_size
        self.progress = progress

    def __call__(self, names: Sequence[str], autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """(Q,) names -> (Q, E) fp32 unit-norm embeddings on the model's device, the text tower run under
        ``autocast_dtype`` (None = fp32)."""
        names = list(names)
        device = next(self.clip_model.parameters()).device
        path = None
        if self.cache_dir:
            key = cache_key(f"{self.model_identity}|{PRECISION_NAMES[autocast_dtype]}", self.templates)
            path = os.path.join(self.cache_dir, f"{key}.pt")
        known = self._read_cache(path) if path else {}
        missing = [name for name in dict.fromkeys(names) if name not in known]
        if missing:
            logger.info("Encoding %d text queries x %d templates%s", len(missing), len(self.templates),
                        f" (cached in {path})" if path else "")
            known.update(zip(missing, self._encode(missing, device, autocast_dtype).cpu()))
            if path:
                self._write_cache(path, {name: known[name] for name in missing})
        return torch.stack([known[name] for name in names]).to(device)

    def _read_cache(self, path: str, warn: bool = True) -> Dict[str, torch.Tensor]:
        """name -> (E,) embedding of a cache file; empty (with a warning) when it is damaged or not theirs."""
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return {}
        except Exception as error:  # truncated or corrupted files raise many types
            if warn:
                logger.warning("Text-embedding cache %s is damaged (%s: %s); recomputing it", path,
                               type(error).__name__, str(error)[:200])
            return {}
        embeddings = cached.get("embeddings") if isinstance(cached, dict) else None
        names = cached.get("names") if isinstance(cached, dict) else None
        if (not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or not isinstance(names, list)
                or embeddings.shape[0] != len(names) or not torch.isfinite(embeddings).all()):
            if warn:
                logger.warning("Text-embedding cache %s does not hold one finite embedding per name; "
                               "recomputing it", path)
            return {}
        if cached.get("templates") != self.templates:
            if warn:
                logger.warning("Text-embedding cache %s belongs to other templates; recomputing it", path)
            return {}
        return dict(zip(names, embeddings))

    def _write_cache(self, path: str, new: Dict[str, torch.Tensor]):
        """Add ``new`` embeddings to the file: re-read it (other processes may have added names since), merge,
        write under a unique temporary name, rename. Readers only ever see complete files; when two writers
        race, the last one's file may lack the other's new names, which a later run encodes again."""
        merged = {**self._read_cache(path, warn=False), **new}
        os.makedirs(self.cache_dir, exist_ok=True)
        record = {"names": list(merged), "templates": self.templates, "embeddings": torch.stack(list(merged.values()))}
        write_atomically(path, lambda temporary: torch.save(record, temporary))

    @torch.no_grad()
    def _encode(self, names: List[str], device, autocast_dtype: Optional[torch.dtype]) -> torch.Tensor:
        from tqdm import tqdm

        prompts = [template.replace("{}", name) for name in names for template in self.templates]
        tokens = self.tokenizer(prompts).to(device)
        tower = CausalTextTower.of(self.clip_model)
        if tower is not None:
            positions = tower.pooled_positions(tokens)
            order = torch.argsort(positions, stable=True)  # short prompts together: short batches
        else:
            logger.info("Text tower without a causal mask and end-of-text pooling: encoding the full context")
            order = torch.arange(len(prompts), device=device)
        autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        features = None
        with autocast, tqdm(total=len(prompts), desc="CDAM text embeddings", unit="prompt",
                            disable=not self.progress) as bar:
            for start in range(0, len(prompts), self.batch_size):
                batch = order[start:start + self.batch_size]
                if tower is not None:
                    encoded = tower.encode(tokens[batch], positions[batch])
                else:
                    encoded = self.clip_model.encode_text(tokens[batch])
                encoded = F.normalize(encoded.float(), dim=-1)
                if features is None:
                    features = encoded.new_empty(len(prompts), encoded.shape[-1])
                features[batch] = encoded
                bar.update(len(batch))
        per_prompt = features.reshape(len(names), len(self.templates), -1)
        return F.normalize(per_prompt.mean(dim=1), dim=-1)
