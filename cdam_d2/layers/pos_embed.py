"""Position-embedding resampling shared by the CLIP and DeiT backbones."""
from typing import Tuple

import torch
import torch.nn.functional as F


def resample_patch_positions(
    patch_pos: torch.Tensor, source_grid: Tuple[int, int], target_grid: Tuple[int, int]
) -> torch.Tensor:
    """Resample (S_h*S_w, C) row-major patch position embeddings to (T_h*T_w, C).

    Both released codes resize with bicubic, ``align_corners=False`` and *scale factors*
    ((T_h+0.1)/S_h, (T_w+0.1)/S_w) (DINO's "+0.1" trick) rather than a target size; the scale
    factor decides the sampling positions, so it is reproduced exactly. Computed in at least fp32
    and returned in the input dtype; gradients flow to ``patch_pos``.
    """
    dim = patch_pos.shape[-1]
    work_dtype = torch.promote_types(patch_pos.dtype, torch.float32)
    grid = patch_pos.to(work_dtype).reshape(1, source_grid[0], source_grid[1], dim).permute(0, 3, 1, 2)
    scale = ((target_grid[0] + 0.1) / source_grid[0], (target_grid[1] + 0.1) / source_grid[1])
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    if tuple(grid.shape[-2:]) != tuple(target_grid):
        raise RuntimeError(f"position grid resampled to {tuple(grid.shape[-2:])}, expected {target_grid}")
    return grid[0].flatten(1).t().to(patch_pos.dtype)
