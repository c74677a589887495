"""ClusterCAM network: DeiT with K class tokens, cluster blocks, CAM head and decoder."""
import math

import torch
from torch import nn
from torch.nn import functional as F

from ...layers.pos_embed import resample_patch_positions
from .blocks import ClusterBlock

__all__ = ["ClusterCAMNet", "LargeFOV", "interpolate_patch_pos_embed"]


def interpolate_patch_pos_embed(patch_pos, grid_size):
    """(1, g*g, C) stored square patch position grid -> (1, Hp*Wp, C) for ``grid_size``
    (bicubic with the released "+0.1" scale factors)."""
    side = math.isqrt(patch_pos.shape[1])
    return resample_patch_positions(patch_pos[0], (side, side), grid_size)[None]


class LargeFOV(nn.Module):
    """DeepLab-v1 LargeFOV decoder without biases: (B, C_in, h, w) -> (B, num_outputs, h, w)."""

    def __init__(self, in_channels, num_outputs, hidden_dim=512, dilation=5):
        super().__init__()
        self.conv6 = nn.Conv2d(in_channels, hidden_dim, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv7 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv8 = nn.Conv2d(hidden_dim, num_outputs, 1, bias=False)

    def forward(self, x):
        return self.conv8(F.relu(self.conv7(F.relu(self.conv6(x)))))


class ClusterCAMNet(nn.Module):
    """ClusterCAM on a DeiT backbone. Input: (B, 3, H, W) ImageNet-normalised RGB, any H, W >= patch
    size; the patch grid is (⌊H/P⌋, ⌊W/P⌋) (border pixels dropped, no padding).

    The first ``depth - cluster_depth`` blocks are plain MHSA blocks; the rest are cluster blocks,
    whose mixed class->patch attentions form the attention features Φ. Official setting: all blocks.
    """

    def __init__(self, num_classes, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
                 patch_size=16, pos_embed_grid=14, cluster_depth=12, cluster_cell=2, cluster_iters=3,
                 cam_last_layers=3, drop_path=0.1, decoder_dim=512, decoder_dilation=5,
                 clamp_alpha=False):
        super().__init__()
        from timm.layers import PatchEmbed

        if not 1 <= cluster_depth <= depth:
            raise ValueError(f"CLUSTER_DEPTH={cluster_depth} must be in [1, DEPTH={depth}]")
        if not 1 <= cam_last_layers <= depth:
            raise ValueError(f"CAM_LAST_LAYERS={cam_last_layers} must be in [1, DEPTH={depth}]")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.cluster_depth = cluster_depth
        self.cam_last_layers = cam_last_layers
        # img_size=None: accept any input size; the conv floors the grid.
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.pos_embed_grid = pos_embed_grid
        self.cls_token = nn.Parameter(torch.zeros(1, num_classes, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_classes + pos_embed_grid ** 2, embed_dim))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            ClusterBlock(embed_dim, num_heads, num_classes, mlp_ratio, rates[i],
                         use_clusters=i >= depth - cluster_depth, cluster_cell=cluster_cell,
                         cluster_iters=cluster_iters, clamp_alpha=clamp_alpha)
            for i in range(depth))
        # Loaded from DeiT but never applied (the release puts no final LayerNorm before the heads); kept for 1:1
        # checkpoint conversion.
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        feature_dim = embed_dim + cluster_depth * num_heads * num_classes
        self.head = nn.Conv2d(feature_dim, num_classes, 3, padding=1)
        self.decoder = LargeFOV(feature_dim, num_classes + 1, decoder_dim, decoder_dilation)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def alphas(self):
        """(cluster_depth,) tensor of the per-block mixing weights α."""
        return torch.cat([blk.st_attn.alpha() for blk in self.blocks if blk.st_attn.use_clusters])

    def grid_size(self, image_size):
        return image_size[0] // self.patch_size, image_size[1] // self.patch_size

    def _position_embedding(self, image_size, grid_size):
        """(1, K+Hp*Wp, C). Resampled unless the grid matches the stored one AND H == W in pixels."""
        num_cls = self.num_classes
        if grid_size[0] * grid_size[1] == self.pos_embed_grid ** 2 and image_size[0] == image_size[1]:
            return self.pos_embed
        patch_pos = interpolate_patch_pos_embed(self.pos_embed[:, num_cls:], grid_size)
        return torch.cat([self.pos_embed[:, :num_cls], patch_pos], dim=1)

    def forward_features(self, images, with_patch_affinity=False, with_attention_parts=False):
        """
        Args:
            images: (B, 3, H, W) normalised.
            with_patch_affinity: also return R = Σ_layers mean_heads(patch->patch attention).
            with_attention_parts: also return each block's class->patch attentions before mixing.

        Returns:
            dict with ``cls_tokens`` (B, K, C), ``features`` F (B, C + L_c·h·K, Hp, Wp) ordered
            [patch map; Φ layer-major, then head, then class], ``class_attn`` list of (B, h, K, N) per
            block, ``patch_affinity`` (B, N, N) if requested, and ``attention_parts`` (a list of
            ``ClusterAttention`` part dicts, one per block) if requested.
        """
        image_size = tuple(images.shape[-2:])
        grid_size = self.grid_size(image_size)
        if min(grid_size) < 1:
            raise ValueError(f"input {image_size} is smaller than one {self.patch_size}px patch")
        batch = images.shape[0]
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = x + self._position_embedding(image_size, grid_size)
        class_attns, phi, affinity, parts = [], [], None, []
        for block in self.blocks:
            x, patch_attn, class_attn, *block_parts = block(x, grid_size, with_attention_parts)
            class_attns.append(class_attn)
            parts += block_parts
            if block.st_attn.use_clusters:
                phi.append(class_attn)
            if with_patch_affinity:
                layer_affinity = patch_attn.mean(dim=1)
                affinity = layer_affinity if affinity is None else affinity + layer_affinity
        num_cls = self.num_classes
        patch_map = x[:, num_cls:].transpose(1, 2).reshape(batch, self.embed_dim, *grid_size)
        phi = torch.stack(phi, dim=1).reshape(batch, -1, *grid_size)
        out = {
            "cls_tokens": x[:, :num_cls],
            "features": torch.cat([patch_map, phi], dim=1),
            "class_attn": class_attns,
        }
        if with_patch_affinity:
            out["patch_affinity"] = affinity
        if with_attention_parts:
            out["attention_parts"] = parts
        return out

    def forward(self, images, with_segmentation=True):
        """Normal forward (training, and inference in eval mode).

        Returns:
            cls_logits (B, K): mean over channels of each class token;
            pat_logits (B, K): global average of the CAM head output (with bias);
            segs (B, K+1, Hp, Wp) decoder logits (channel 0 = background), or None.
        """
        out = self.forward_features(images)
        features = out["features"]
        cls_logits = out["cls_tokens"].mean(dim=-1)
        pat_logits = self.head(features).mean(dim=(2, 3))
        segs = self.decoder(features) if with_segmentation else None
        return cls_logits, pat_logits, segs

    def forward_cams(self, images):
        """CAM mode, used only for pseudo-labels: (B, 3, H, W) -> (B, K, Hp, Wp).

        ReLU(head without bias) weighted by the head-mean class->patch attention summed over the
        last ``cam_last_layers`` blocks, then propagated by R (patch affinity summed over all blocks).
        """
        out = self.forward_features(images, with_patch_affinity=True)
        features = out["features"]
        activation = F.relu(F.conv2d(features, self.head.weight, None, padding=1)).detach()
        attention = self._cam_attention(out["class_attn"])
        cams = activation.flatten(2) * attention
        cams = cams @ out["patch_affinity"].transpose(1, 2)
        return cams.reshape(activation.shape)

    @torch.no_grad()
    def attention_maps(self, images):
        """The class->patch attentions behind the CAM, for pictures: each is the head mean summed over the
        last ``cam_last_layers`` blocks, as the CAM weights its activations (see ``forward_cams``).

        Args:
            images: (B, 3, H, W) normalised.

        Returns:
            dict of (B, K, Hp, Wp) maps: ``patch_to_class``, the MHSA attention of each class token on
            the patches; ``cluster_to_class``, the class tokens' attention on the clusters carried to
            the patches by the soft assignment (zero for blocks without clusters); ``mixed``, their
            α-mix, the CAM's attention weight.
        """
        out = self.forward_features(images, with_attention_parts=True)
        parts = out["attention_parts"]
        patch_to_class = [part["patch_to_class"] for part in parts]
        # A block without clusters contributes no cluster-guided attention.
        cluster_to_class = [part["patch_to_class"] * 0 if part["cluster_to_class"] is None
                            else part["cluster_to_class"] for part in parts]
        maps = {"patch_to_class": patch_to_class, "cluster_to_class": cluster_to_class, "mixed": out["class_attn"]}
        grid_size = self.grid_size(tuple(images.shape[-2:]))
        return {name: self._cam_attention(attns).unflatten(-1, grid_size) for name, attns in maps.items()}

    def _cam_attention(self, class_attns):
        """Per-block (B, h, K, N) attentions -> (B, K, N): head mean summed over the last ``cam_last_layers``."""
        return sum(attn.mean(dim=1) for attn in class_attns[-self.cam_last_layers:])
