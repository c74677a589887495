"""Dense (per-patch) features of an open_clip ViT with the last-block variants of the training-free
bases (vanilla CLIP, MaskCLIP, SCLIP, ClearCLIP, GEM, NACLIP), the bases whose computation reads
earlier blocks too (SC-CLIP, ResCLIP: ``sc_clip.py``, ``resclip.py``) and CDAM's second pass.

Shapes: B images, T = N + 1 tokens (CLS first, then the g_h x g_w patch grid row-major), D = width,
H heads of size d = D / H, E = joint embedding size.
"""
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.pos_embed import POS_EMBED_RESAMPLINGS, resample_patch_positions
from .patch_grid import patch_coordinates
from .resclip import ResCLIPBase
from .sc_clip import SCCLIPBase

BASE_VARIANTS = ("clip", "maskclip", "sclip", "clearclip", "gem", "naclip")
# Bases that read blocks before the last one, each in its own module (constructed with ``base_options``).
MULTI_LAYER_BASES = {"sc_clip": SCCLIPBase, "resclip": ResCLIPBase}
BASES = BASE_VARIANTS + tuple(MULTI_LAYER_BASES)
SECOND_PASS_MODES = ("released", "base")
# Structure of the last block: "full" keeps the residual around the attention (and the FFN; GEM's path has
# none), "reduced" keeps the attention output alone; "auto" is the base's own (reduced: REDUCED_BASES; the
# MULTI_LAYER_BASES take only "auto": their first pass is their own).
LAST_BLOCKS = ("auto", "full", "reduced")
# Bases whose released last block drops the residual and the FFN (ClearCLIP, NACLIP, ResCLIP: "reduced"
# block; ResCLIP's first pass is its own module, the reduced block shapes its "base" second pass).
REDUCED_BASES = ("clearclip", "naclip", "resclip")
# Position-embedding resampling of each base's release when it is not the scale-factor rule.
BASE_POS_EMBED_RESAMPLING = {"gem": "size_antialias"}


def check_encoder_options(base: str, last_block: str, pos_embed_resampling: str) -> None:
    """Raise a ValueError naming the ``MODEL.CDAM`` key, its value and the allowed values unless ``base``,
    ``last_block`` and ``pos_embed_resampling`` are known and fit together (no weights needed)."""
    if base not in BASES:
        raise ValueError(f"MODEL.CDAM.BASE {base!r} is not one of {BASES}")
    if last_block not in LAST_BLOCKS:
        raise ValueError(f"MODEL.CDAM.LAST_BLOCK {last_block!r} is not one of {LAST_BLOCKS}")
    if base in MULTI_LAYER_BASES and last_block != "auto":
        raise ValueError(f"MODEL.CDAM.LAST_BLOCK {last_block!r}: base {base!r} defines its own last block; "
                         "leave LAST_BLOCK 'auto'")
    if pos_embed_resampling != "auto" and pos_embed_resampling not in POS_EMBED_RESAMPLINGS:
        raise ValueError(f"MODEL.CDAM.POS_EMBED_RESAMPLING {pos_embed_resampling!r} is not one of "
                         f"{('auto',) + tuple(POS_EMBED_RESAMPLINGS)}")


@dataclass
class StreamState:
    """Token streams entering the last block.

    Attributes:
        tokens: (B, T, D) residual stream entering the last block (x^(L-1), the output of block L-1).
        grid: (g_h, g_w) patch grid.
        gem_tokens: (B, T, D) GEM path stream before the last block, or None for other bases.
        values: (B, T, D) the last block's values of ``tokens`` (v of ``ln_1``), kept by a first pass that
            computes them, so that the second pass does not again.
        extras: what a multi-layer base (``MULTI_LAYER_BASES``) keeps from the earlier blocks, or None.
    """

    tokens: torch.Tensor
    grid: Tuple[int, int]
    gem_tokens: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None
    extras: Any = None


class DenseCLIPEncoder(nn.Module):
    """Patch features of an open_clip ``VisionTransformer`` (no trainable state of its own).

    The last block is re-implemented from the block's own weights (``ln_1``, ``attn.in_proj_*``,
    ``attn.out_proj``, ``ln_2``, ``mlp``), so that it can run with a base variant's attention (first pass) or
    an externally given attention map (CDAM second pass).
    """

    def __init__(self, visual: nn.Module, base: str = "maskclip", gem_depth: int = 6, naclip_sigma: float = 5.0,
                 last_block: str = "auto", pos_embed_resampling: str = "auto",
                 base_options: Optional[Mapping[str, Any]] = None):
        """
        Args:
            visual: ``open_clip`` ``VisionTransformer`` (``model.visual``).
            base: first-pass variant, one of ``BASES``.
            gem_depth: number of last blocks on GEM's parallel path (GEM's ``gem_depth=7`` of 12 blocks = 6).
            naclip_sigma: std of NACLIP's Gaussian neighbourhood, in patches (also ResCLIP's).
            last_block: one of ``LAST_BLOCKS``; "reduced" is ClearCLIP's ``ignore_residual=True`` for any base
                (for GEM: the path keeps only its last block's attention output).
            pos_embed_resampling: "auto" (the base's release: GEM "size_antialias", the others
                "scale_factor") or one of ``POS_EMBED_RESAMPLINGS``.
            base_options: keyword arguments of the multi-layer base's class (``MULTI_LAYER_BASES``); ignored by
                the other bases.
        """
        super().__init__()
        check_encoder_options(base, last_block, pos_embed_resampling)
        if pos_embed_resampling == "auto":
            pos_embed_resampling = BASE_POS_EMBED_RESAMPLING.get(base, "scale_factor")
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if (blocks is None or not hasattr(visual, "conv1") or getattr(visual, "attn_pool", None) is not None
                or not all(isinstance(getattr(block, "attn", None), nn.MultiheadAttention) for block in blocks)):
            raise ValueError("CDAM needs a standard open_clip ViT image tower (conv1, class token, resblocks with "
                             "nn.MultiheadAttention, no attention pooling); timm/ResNet towers are not supported")
        self.visual = visual
        self.base = base
        self.gem_depth = max(1, min(gem_depth, len(blocks)))
        self.naclip_sigma = naclip_sigma
        self.reduced = base in REDUCED_BASES if last_block == "auto" else last_block == "reduced"
        self.pos_embed_resampling = pos_embed_resampling
        self.multi_layer = (MULTI_LAYER_BASES[base](len(blocks), **(base_options or {}))
                            if base in MULTI_LAYER_BASES else None)
        self._positions_by_grid, self._positions_source = {}, None

    @property
    def blocks(self):
        return self.visual.transformer.resblocks

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.visual.conv1.kernel_size)

    @property
    def num_heads(self) -> int:
        return self.blocks[-1].attn.num_heads

    # ---- embedding ---------------------------------------------------------------------------------------
    def grid_for(self, height: int, width: int) -> Tuple[int, int]:
        """Patch grid of a crop; the patch conv floors sizes that are not multiples of the patch size."""
        grid = (height // self.patch_size[0], width // self.patch_size[1])
        if min(grid) < 1:
            raise ValueError(f"crop {height}x{width} is smaller than the patch size {self.patch_size}")
        return grid

    def positional_embedding(self, grid: Tuple[int, int]) -> torch.Tensor:
        """(T, D) positional embedding for ``grid``: bicubic resize of the patch rows by the encoder's
        resampling rule (``resample_patch_positions``); the CLS row is unchanged and the trained grid returns
        the table itself."""
        table = self.visual.positional_embedding
        trained_grid = tuple(self.visual.grid_size)
        if tuple(grid) == trained_grid:
            return table
        # Cached per grid; a device move or a weight load changes the table's storage or version,
        # which empties the cache.
        source = (table.data_ptr(), table._version)
        if self._positions_source != source:
            self._positions_by_grid, self._positions_source = {}, source
        grid = tuple(grid)
        if grid not in self._positions_by_grid:
            resized = resample_patch_positions(table[1:].detach(), trained_grid, grid, self.pos_embed_resampling)
            self._positions_by_grid[grid] = torch.cat([table[:1].detach(), resized])
        return self._positions_by_grid[grid]

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(B, 3, h, w) normalized images -> (B, T, D) tokens after ``ln_pre``, and the grid."""
        grid = self.grid_for(*images.shape[-2:])
        patches = self.visual.conv1(images).flatten(2).transpose(1, 2)
        cls = self.visual.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.positional_embedding(grid).to(patches.dtype)
        return self.visual.ln_pre(tokens), grid

    # ---- block pieces ------------------------------------------------------------------------------------
    def _run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D) through an open_clip block: the block's own computation, with its softmax
        attention evaluated by ``scaled_dot_product_attention`` (fused; on CPU faster than the
        ``nn.MultiheadAttention`` fast path, same result up to rounding)."""
        attn = block.attn
        if attn.bias_k is not None or attn.add_zero_attn or not attn._qkv_same_embed_dim:
            if self.visual.transformer.batch_first:  # not in CLIP towers: run the block as it is
                return block(tokens)
            return block(tokens.transpose(0, 1)).transpose(0, 1)
        q, k, v = self._qkv(block, block.ln_1(tokens))
        attn_out = self._out_proj(block, self._merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return self._attn_residual_ffn(block, tokens, attn_out)

    def _attend(self, block: nn.Module, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(B, H, T', T') attention weights, (B, H, T', d) values -> (B, T', D) after the block's ``out_proj``
        (T' = T, or N for a base that attends over the patches only)."""
        return self._out_proj(block, self._merge_heads(weights @ values))

    def _qkv(self, block: nn.Module, normed: torch.Tensor):
        """(B, T, D) -> q, k, v of shape (B, H, T, d) from the block's packed ``in_proj`` (rows q, k, v)."""
        attn = block.attn
        qkv = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias)
        batch, tokens, _ = qkv.shape
        qkv = qkv.reshape(batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _value(self, block: nn.Module, normed: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D) values (the v third of ``in_proj``), heads concatenated."""
        width = normed.shape[-1]
        attn = block.attn
        bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
        return F.linear(normed, attn.in_proj_weight[2 * width:], bias)

    @staticmethod
    def _merge_heads(per_head: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d) -> (B, T, H*d)."""
        return per_head.transpose(1, 2).flatten(2)

    @staticmethod
    def _out_proj(block: nn.Module, values: torch.Tensor) -> torch.Tensor:
        """(B, T, D) attended values -> (B, T, D) after the block's ``out_proj``."""
        return block.attn.out_proj(values)

    @staticmethod
    def _attn_residual_ffn(block: nn.Module, tokens: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """y = FFN(x + O): residual around attention, then the block's MLP with its residual."""
        hidden = tokens + block.ls_1(attn_out)
        return hidden + block.ls_2(block.mlp(block.ln_2(hidden)))

    def _neighbourhood_bias(self, grid: Tuple[int, int], device, dtype) -> torch.Tensor:
        """(T, T) NACLIP Gaussian window exp(-|pi_i - pi_j|^2 / (2 sigma^2)), zero in the CLS row/column."""
        coords = patch_coordinates(grid, device)
        gauss = torch.exp(-torch.cdist(coords, coords).square() / (2 * self.naclip_sigma ** 2))
        return F.pad(gauss, (1, 0, 1, 0)).to(dtype)

    def _gem_weights(self, block: nn.Module, tokens: torch.Tensor):
        """GEM self-self attention weights (B, H, T, T) of ``block`` on ``tokens``, and the values (B, H, T, d)."""
        normed = block.ln_1(tokens)
        q, k, v = self._qkv(block, normed)
        head_dim = q.shape[-1]
        # adaptive inverse temperature: mean token norm of the block input x d^-1/2, one scalar per image
        temperature = (normed.norm(dim=-1).mean(dim=-1) * head_dim ** -0.5).view(-1, 1, 1, 1)

        def self_self(features):
            unit = F.normalize(features, dim=-1)
            refined = F.normalize(torch.softmax(temperature * unit @ unit.transpose(-2, -1), dim=-1) @ unit, dim=-1)
            return torch.softmax(temperature * refined @ refined.transpose(-2, -1), dim=-1)

        return (self_self(q) + self_self(k) + self_self(v)) / 3, v

    def _gem_attention(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """GEM self-self attention output (B, T, D) of ``block`` on the original-path input ``tokens``."""
        return self._attend(block, *self._gem_weights(block, tokens))

    # ---- passes ------------------------------------------------------------------------------------------
    def forward_to_last_block(self, images: torch.Tensor) -> StreamState:
        """Run blocks 1..L-1 once (and GEM's parallel path when ``base == "gem"`` and the last block is full:
        a reduced GEM path keeps only its last block's output; a multi-layer base keeps what it needs of them
        in ``extras``)."""
        tokens, grid = self.embed(images)
        if self.multi_layer is not None:
            tokens, extras = self.multi_layer.run_blocks(self, tokens, grid, images)
            return StreamState(tokens, grid, extras=extras)
        with_gem_path = self.base == "gem" and not self.reduced
        gem_start = len(self.blocks) - self.gem_depth
        gem_tokens = None
        for index, block in enumerate(self.blocks[:-1]):
            if with_gem_path and index == gem_start:
                gem_tokens = tokens  # the GEM path starts from the input of its first block
            if gem_tokens is not None:
                gem_tokens = gem_tokens + self._gem_attention(block, tokens)
            tokens = self._run_block(block, tokens)
        if with_gem_path and gem_tokens is None:  # gem_depth 1: the path is the last block only
            gem_tokens = tokens
        return StreamState(tokens, grid, gem_tokens)

    def project(self, tokens: torch.Tensor, drop_cls: bool = True) -> torch.Tensor:
        """(B, T, D) -> (B, N, E) unit-norm patch features: ``ln_post``, ``proj``, normalize, drop CLS (tokens
        without CLS, (B, N, D), with ``drop_cls=False``)."""
        features = self.visual.ln_post(tokens)
        if self.visual.proj is not None:
            features = features @ self.visual.proj
        return F.normalize(features[:, 1:] if drop_cls else features, dim=-1)

    def first_pass(self, state: StreamState, queries: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Base-variant last block -> (B, N, E) patch features, with the residual and FFN of the base's release
        or of ``last_block``; "maskclip", the release's first pass, is identity attention (the value path).

        Args:
            queries: (Q_D, E) unit dataset queries, for a base that segments the window first (ResCLIP).
        """
        if self.multi_layer is not None:
            return self.multi_layer.first_pass(self, state, queries)
        block, tokens = self.blocks[-1], state.tokens
        if self.base == "clip" and not self.reduced:
            return self.project(self._run_block(block, tokens))
        attn_out = self._last_attention(block, state)
        if self.reduced:
            return self.project(attn_out)
        if self.base == "gem":
            return self.project(state.gem_tokens + attn_out)
        return self.project(self._attn_residual_ffn(block, tokens, attn_out))

    def _last_attention(self, block: nn.Module, state: StreamState) -> torch.Tensor:
        """(B, T, D) output of the last block's attention (after ``out_proj``) under the base's attention rule
        (a ``BASE_VARIANTS`` base; GEM's on the original stream). Except for gem, whose values come out of its
        own path, keeps the block's values (B, T, D) in ``state.values`` for the second pass."""
        if self.base == "gem":
            return self._gem_attention(block, state.tokens)
        normed = block.ln_1(state.tokens)
        if self.base == "maskclip":  # identity attention: the values alone
            state.values = self._value(block, normed)
            return self._out_proj(block, state.values)
        q, k, v = self._qkv(block, normed)
        state.values = self._merge_heads(v)
        if self.base == "clip":  # CLIP's own attention, fused
            return self._out_proj(block, self._merge_heads(F.scaled_dot_product_attention(q, k, v)))
        return self._attend(block, _ATTENTION_RULES[self.base](self, q, k, state.grid), v)

    def base_attention(self, state: StreamState, queries: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N, N) patch-to-patch attention that the base's last block applies in the first pass (query
        rows, key columns; head mean, CLS dropped): softmax rows for clip, clearclip, naclip and gem, the sum
        of two for sclip, the identity for maskclip; SC-CLIP's and ResCLIP's mixtures from their modules
        (``SCCLIPBase.base_attention``, ``ResCLIPBase.base_attention``). For pictures of what a patch attends
        to.

        Args:
            state: the stream state of :meth:`forward_to_last_block`.
            queries: (Q_D, E) unit dataset queries, for a base whose attention depends on them (ResCLIP).
        """
        if self.multi_layer is not None:
            return self.multi_layer.base_attention(self, state, queries)
        block, tokens = self.blocks[-1], state.tokens
        if self.base == "maskclip":
            eye = torch.eye(tokens.shape[1] - 1, dtype=tokens.dtype, device=tokens.device)
            return eye.expand(tokens.shape[0], -1, -1)
        if self.base == "gem":
            weights = self._gem_weights(block, tokens)[0]
        else:
            q, k, _ = self._qkv(block, block.ln_1(tokens))
            weights = _ATTENTION_RULES[self.base](self, q, k, state.grid)
        return weights.mean(dim=1)[:, 1:, 1:]

    @staticmethod
    def _scaled_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, H, T', d) a and b -> (B, H, T', T') attention logits a b^T / sqrt(d)."""
        return a.shape[-1] ** -0.5 * a @ b.transpose(-2, -1)

    def _softmax_weights(self, q, k, grid) -> torch.Tensor:
        """CLIP's own softmax(q k^T / sqrt(d)) (ClearCLIP's "vanilla")."""
        return torch.softmax(self._scaled_scores(q, k), dim=-1)

    def _correlative_weights(self, q, k, grid) -> torch.Tensor:
        """SCLIP: softmax(q q^T / sqrt(d)) + softmax(k k^T / sqrt(d))."""
        return torch.softmax(self._scaled_scores(q, q), dim=-1) + torch.softmax(self._scaled_scores(k, k), dim=-1)

    def _query_query_weights(self, q, k, grid) -> torch.Tensor:
        """ClearCLIP: softmax(q q^T / sqrt(d))."""
        return torch.softmax(self._scaled_scores(q, q), dim=-1)

    def _neighbourhood_weights(self, q, k, grid) -> torch.Tensor:
        """NACLIP: softmax(k k^T / sqrt(d) + Gaussian neighbourhood bias)."""
        logits = self._scaled_scores(k, k)
        return torch.softmax(logits + self._neighbourhood_bias(grid, logits.device, logits.dtype), -1)

    def second_pass(self, state: StreamState, patch_attention: torch.Tensor, mode: str = "released") -> torch.Tensor:
        """Last block with a given patch-to-patch attention map shared by all heads -> (B, N, E) features.

        Args:
            patch_attention: (B, N, N) map W; the full (T, T) map has a zero CLS row and column, so the CLS
                token receives only the ``out_proj`` bias. It is applied as one GEMM on the D-dim values.
            mode: "released" keeps residual and FFN on the original stream for every base (the release has only
                the MaskCLIP base, whose block keeps both), SC-CLIP and ResCLIP included (their first pass then
                only shapes the map); "base" keeps the base's own block structure: the attention output alone
                for a reduced block (ClearCLIP, NACLIP, ResCLIP with the map in place of its whole attention),
                GEM's own path for GEM, SC-CLIP's two calibrated paths with the map as their attention
                (``SCCLIPBase.second_pass``).
        """
        if mode not in SECOND_PASS_MODES:
            raise ValueError(f"MODEL.CDAM.SECOND_PASS {mode!r} is not one of {SECOND_PASS_MODES}")
        if mode == "base" and self.base == "sc_clip":  # SC-CLIP's last block runs on two paths
            return self.multi_layer.second_pass(self, state, patch_attention)
        block, tokens = self.blocks[-1], state.tokens
        values = state.values if state.values is not None else self._value(block, block.ln_1(tokens))
        patch_values = torch.bmm(patch_attention.to(values.dtype), values[:, 1:])
        attended = torch.cat([torch.zeros_like(values[:, :1]), patch_values], dim=1)
        attn_out = self._out_proj(block, attended)
        if mode == "base" and self.reduced:
            return self.project(attn_out)
        if mode == "base" and self.base == "gem":
            return self.project(state.gem_tokens + attn_out)
        return self.project(self._attn_residual_ffn(block, tokens, attn_out))


# Last-block attention weights of the bases that attend with q and k: (encoder, q, k, grid) -> (B, H, T, T),
# q and k of shape (B, H, T, d). MaskCLIP (identity) and GEM (a parallel path) are handled apart.
_ATTENTION_RULES = {
    "clip": DenseCLIPEncoder._softmax_weights,
    "sclip": DenseCLIPEncoder._correlative_weights,
    "clearclip": DenseCLIPEncoder._query_query_weights,
    "naclip": DenseCLIPEncoder._neighbourhood_weights,
}
