"""Helpers on a window's patch grid shared by the bases and the segmentor.

Shapes: B windows, g_h x g_w patch grid, N = g_h * g_w patches (row-major), E embedding size, Q queries.
"""
from typing import Tuple

import torch


def patch_coordinates(grid: Tuple[int, int], device) -> torch.Tensor:
    """(N, 2) float32 (row, column) of each patch, row-major."""
    rows, cols = torch.meshgrid(torch.arange(grid[0], device=device), torch.arange(grid[1], device=device),
                                indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=1).to(torch.float32)


def patch_logits(features: torch.Tensor, queries: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(B, N, E) unit features, (Q, E) unit queries -> (B, Q, g_h, g_w) cosine logits."""
    return (features @ queries.t()).transpose(1, 2).reshape(features.shape[0], -1, *grid)
