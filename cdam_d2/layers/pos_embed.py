"""Position-embedding resampling shared by the CLIP and DeiT backbones."""
from typing import Tuple

import torch
import torch.nn.functional as F

# "scale_factor": SCLIP / CDAM / ClearCLIP / NACLIP and the DeiT backbone; "size_antialias": GEM.
POS_EMBED_RESAMPLINGS = ("scale_factor", "size_antialias")


def resample_patch_positions(
    patch_pos: torch.Tensor, source_grid: Tuple[int, int], target_grid: Tuple[int, int],
    mode: str = "scale_factor",
) -> torch.Tensor:
    """Resample (S_h*S_w, C) row-major patch position embeddings to (T_h*T_w, C), bicubic, ``align_corners=False``.

    Args:
        mode: "scale_factor" passes the *scale factors* ((T_h+0.1)/S_h, (T_w+0.1)/S_w) (DINO's "+0.1" trick)
            rather than a target size; the scale factor decides the sampling positions, so it is reproduced
            exactly. "size_antialias" passes the target size with ``antialias=True``, as GEM does: PyTorch's
            antialiased bicubic uses another kernel (a = -0.5) even when upsampling, so the two differ.
    Returns:
        The resampled table, computed in at least fp32 and returned in the input dtype; gradients flow to
        ``patch_pos``.
    """
    dim = patch_pos.shape[-1]
    work_dtype = torch.promote_types(patch_pos.dtype, torch.float32)
    grid = patch_pos.to(work_dtype).reshape(1, source_grid[0], source_grid[1], dim).permute(0, 3, 1, 2)
    if mode == "scale_factor":
        scale = ((target_grid[0] + 0.1) / source_grid[0], (target_grid[1] + 0.1) / source_grid[1])
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    elif mode == "size_antialias":
        grid = F.interpolate(grid, size=tuple(target_grid), mode="bicubic", align_corners=False, antialias=True)
    else:
        raise ValueError(f"position-embedding resampling {mode!r} is not one of {POS_EMBED_RESAMPLINGS}")
    if tuple(grid.shape[-2:]) != tuple(target_grid):
        raise RuntimeError(f"position grid resampled to {tuple(grid.shape[-2:])}, expected {target_grid}")
    return grid[0].flatten(1).t().to(patch_pos.dtype)
