"""ClusterCAM transformer block: global MHSA plus the clustering-guided class attention.

Parameter names follow the official release (``st_attn.qkv``, ``st_attn.proj_st``, ...), so official
checkpoints and DeiT weights map onto them directly (see ``weights.py``).
"""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ClusterAttention", "ClusterBlock", "soft_kmeans"]


def soft_kmeans(features, centroids, num_iters):
    """Global soft k-means over patch features.

    Args:
        features: (B, N, C) projected patch features z.
        centroids: (B, M, C) initial centroids.
        num_iters: number of assignment/update rounds.

    Returns:
        assignment (B, N, M): the soft assignment of the *last* round, computed from the centroids
            before the last update (the official "stale" assignment, one update behind the centroids; replicated).
        centroids (B, M, C): the centroids after the last update.
    """
    scale = features.shape[-1] ** -0.5
    assignment = None
    for _ in range(num_iters):
        assignment = (features @ centroids.transpose(1, 2) * scale).softmax(dim=-1)
        mass = assignment.sum(dim=1).unsqueeze(-1)
        centroids = assignment.transpose(1, 2) @ features / (mass + 1e-8)
    return assignment, centroids


def _multi_head_attention(tokens, qkv_layer, num_heads):
    """Plain softmax attention. tokens (B, T, C) -> output (B, T, C), weights (B, h, T, T)."""
    batch, length, dim = tokens.shape
    qkv = qkv_layer(tokens).reshape(batch, length, 3, num_heads, dim // num_heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    # Scaling the queries (T x d) is cheaper than scaling the T x T logits.
    weights = (query * (dim // num_heads) ** -0.5 @ key.transpose(-2, -1)).softmax(dim=-1)
    output = (weights @ value).transpose(1, 2).reshape(batch, length, dim)
    return output, weights


class ClusterAttention(nn.Module):
    """The official ``st_attn``: global MHSA over [class tokens; patches] and, when
    ``use_clusters``, soft k-means clustering of the patches followed by class/cluster attention.

    LayerNorms use eps 1e-5 (PyTorch default), as in the release.
    """

    def __init__(self, dim, num_heads, num_class_tokens, use_clusters=True, cluster_cell=2,
                 cluster_iters=3, clamp_alpha=False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"EMBED_DIM={dim} must be divisible by NUM_HEADS={num_heads}")
        self.num_heads = num_heads
        self.num_class_tokens = num_class_tokens
        self.use_clusters = use_clusters
        self.cluster_cell = cluster_cell
        self.cluster_iters = cluster_iters
        self.clamp_alpha = clamp_alpha
        # Global branch (DeiT attention; ln_pat normalises all tokens despite its name).
        self.ln_pat = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        if use_clusters:
            self.proj_st = nn.Linear(dim, dim)
            self.ln_pat2 = nn.LayerNorm(dim)
            self.ln_cls = nn.LayerNorm(dim)
            self.ln_st = nn.LayerNorm(dim)
            self.qkv_stsa = nn.Linear(dim, dim * 3)
            self.proj_cls = nn.Linear(dim, dim)
            self.mix_param = nn.Parameter(torch.rand(1))

    def alpha(self):
        """The mixing weight α (unconstrained unless ``clamp_alpha``)."""
        return self.mix_param.clamp(0, 1) if self.clamp_alpha else self.mix_param

    def forward(self, x, grid_size, with_parts=False):
        """
        Args:
            x: (B, K+N, C) block input, K class tokens first, patches row-major.
            grid_size: (Hp, Wp) with Hp*Wp = N.
            with_parts: also return the two class->patch attentions before mixing.

        Returns:
            global_out (B, K+N, C), cluster_out (B, K+N, C) or None: the two residual updates;
            patch_attn (B, h, N, N): patch->patch MHSA weights (rows sum < 1);
            class_attn (B, h, K, N): class->patch weights, mixed with the cluster-guided ones;
            with ``with_parts``, a dict: ``patch_to_class`` (B, h, K, N), the MHSA class->patch weights G,
            and ``cluster_to_class`` (B, h, K, N), the cluster-guided Ĝ (None without clusters).
        """
        num_cls = self.num_class_tokens
        global_out, weights = _multi_head_attention(self.ln_pat(x), self.qkv, self.num_heads)
        global_out = self.proj(global_out)
        patch_attn = weights[:, :, num_cls:, num_cls:]
        class_attn = weights[:, :, :num_cls, num_cls:]
        parts = {"patch_to_class": class_attn, "cluster_to_class": None}
        cluster_out = None
        if self.use_clusters:
            cluster_out, parts["cluster_to_class"] = self._cluster_branch(x, grid_size)
            alpha = self.alpha()
            class_attn = (1 - alpha) * class_attn + alpha * parts["cluster_to_class"]
        if with_parts:
            return global_out, cluster_out, patch_attn, class_attn, parts
        return global_out, cluster_out, patch_attn, class_attn

    def _cluster_branch(self, x, grid_size):
        """Clustering + class/cluster attention.

        Returns the residual update (B, K+N, C) and the cluster-guided class->patch attention
        Ĝ (B, h, K, N).
        """
        num_cls = self.num_class_tokens
        x_cls, x_pat = x[:, :num_cls], x[:, num_cls:]
        batch, num_patches, dim = x_pat.shape
        grid_h, grid_w = grid_size
        features = self.ln_pat2(self.proj_st(x_pat))
        pooled_size = (grid_h // self.cluster_cell, grid_w // self.cluster_cell)
        if pooled_size[0] * pooled_size[1] == 0:
            # No cluster fits: the STSA sees class tokens only and patches get nothing.
            centroids = features.new_zeros(batch, 0, dim)
            assignment = features.new_zeros(batch, num_patches, 0)
        else:
            grid = features.transpose(1, 2).reshape(batch, dim, grid_h, grid_w)
            centroids = F.adaptive_avg_pool2d(grid, pooled_size).flatten(2).transpose(1, 2)
            assignment, centroids = soft_kmeans(features, centroids, self.cluster_iters)
        tokens = torch.cat([self.ln_cls(x_cls), self.ln_st(centroids)], dim=1)
        mixed, weights = _multi_head_attention(tokens, self.qkv_stsa, self.num_heads)
        cls_out = self.proj_cls(mixed[:, :num_cls])
        patch_out = assignment @ mixed[:, num_cls:]
        # Ĝ[b,h,k,n] = Σ_m S[b,n,m] · B[b,h,k,K+m]
        cluster_class_attn = weights[:, :, :num_cls, num_cls:] @ assignment.transpose(1, 2).unsqueeze(1)
        return torch.cat([cls_out, patch_out], dim=1), cluster_class_attn


class ClusterBlock(nn.Module):
    """One ClusterCAM block: x + DropPath(global) + DropPath(cluster), then x + DropPath(MLP).

    The two attention DropPaths draw independent per-sample masks (one module called twice).
    ``norm2`` uses eps 1e-6 as in DeiT.
    """

    def __init__(self, dim, num_heads, num_class_tokens, mlp_ratio=4.0, drop_path=0.0,
                 use_clusters=True, cluster_cell=2, cluster_iters=3, clamp_alpha=False):
        super().__init__()
        from timm.layers import DropPath, Mlp

        self.st_attn = ClusterAttention(dim, num_heads, num_class_tokens, use_clusters,
                                        cluster_cell, cluster_iters, clamp_alpha)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, grid_size, with_parts=False):
        """x (B, K+N, C) -> (x, patch_attn (B,h,N,N), class_attn (B,h,K,N)), plus the attention parts
        of ``ClusterAttention.forward`` with ``with_parts``."""
        global_out, cluster_out, patch_attn, class_attn, *parts = self.st_attn(x, grid_size, with_parts)
        x = x + self.drop_path(global_out)
        if cluster_out is not None:
            x = x + self.drop_path(cluster_out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return (x, patch_attn, class_attn, *parts)
