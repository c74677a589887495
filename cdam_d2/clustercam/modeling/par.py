"""Pixel-Adaptive Refinement (PAR, from AFA), exactly as ClusterCAM's release runs it."""
import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PAR"]

# (dy, dx) of the 8 neighbours in the order TL, T, TR, L, R, BL, B, BR.
_NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class PAR(nn.Module):
    """Propagates score maps along image-colour affinities over 8·|dilations| neighbours (no self
    term, replicate padding). Buffer-only, no learnable parameters.

    Each refinement step is m(i) <- Σ_j W(i,j) m(j) with Σ_j W(i,j) = 1 + w2, and no renormalisation.
    """

    def __init__(self, dilations=(1, 2, 4, 8, 12, 24), num_iters=10, w1=0.3, w2=0.01):
        super().__init__()
        self.dilations = tuple(int(d) for d in dilations)
        self.num_iters = num_iters
        self.w1 = w1
        self.w2 = w2
        kernel = torch.zeros(8, 1, 3, 3)
        for index, (dy, dx) in enumerate(_NEIGHBOUR_OFFSETS):
            kernel[index, 0, dy + 1, dx + 1] = 1.0
        self.register_buffer("kernel", kernel, persistent=False)
        distances = [d * (math.sqrt(2) if dy and dx else 1.0)
                     for d in self.dilations for dy, dx in _NEIGHBOUR_OFFSETS]
        self.register_buffer("distances", torch.tensor(distances), persistent=False)

    @property
    def num_neighbours(self):
        return 8 * len(self.dilations)

    def neighbours(self, x):
        """(B, C, h, w) -> (B, C, 8·|D|, h, w), replicate-padded dilated neighbours."""
        batch, channels, height, width = x.shape
        flat = x.reshape(batch * channels, 1, height, width)
        kernel = self.kernel.to(x.dtype)
        gathered = [F.conv2d(F.pad(flat, [d] * 4, mode="replicate"), kernel, dilation=d)
                    for d in self.dilations]
        return torch.cat(gathered, dim=1).reshape(batch, channels, -1, height, width)

    def affinity(self, image):
        """Neighbour weights W: (B, 3, h, w) RGB in [0,1] -> (B, 8·|D|, h, w); each pixel sums to 1 + w2."""
        neighbours = self.neighbours(image)
        sigma = neighbours.std(dim=2, keepdim=True)
        colour = -((neighbours - image.unsqueeze(2)).abs() / (sigma + 1e-5) / self.w1) ** 2
        colour = colour.mean(dim=1)
        distances = self.distances.to(image.dtype)
        position = -(distances / (distances.std() + 1e-5) / self.w1) ** 2
        return colour.softmax(dim=1) + self.w2 * position.softmax(dim=0).view(1, -1, 1, 1)

    def forward(self, image, masks):
        """
        Args:
            image: (B, 3, h, w) RGB in [0, 1].
            masks: (B, c, h', w') score maps; resized to (h, w) (bilinear, align_corners=True).

        Returns:
            (B, c, h, w) refined maps.
        """
        masks = F.interpolate(masks, size=image.shape[-2:], mode="bilinear", align_corners=True)
        weights = self.affinity(image).unsqueeze(1)
        for _ in range(self.num_iters):
            masks = (self.neighbours(masks) * weights).sum(dim=2)
        return masks
