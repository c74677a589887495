"""ClusterCAM losses: multi-label soft margin on class-token and CAM-head logits, and the bg/fg-balanced
cross-entropy on pseudo-labels; there are no others."""
import torch
from torch import distributed as dist
from torch.nn import functional as F

from .pseudo_labels import IGNORE_LABEL

__all__ = ["classification_loss", "balanced_segmentation_loss"]


def classification_loss(logits, labels):
    """MultiLabelSoftMargin: mean over images and classes of the sigmoid BCE. (B, K), (B, K) -> scalar."""
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def balanced_segmentation_loss(seg_logits, pseudo_labels, across_processes=False):
    """½(CE over background pixels + CE over foreground pixels); 255 ignored, an empty term is 0.

    Args:
        seg_logits: (B, K+1, h, w) decoder logits, upsampled bilinearly to the label size.
        pseudo_labels: (B, H, W) int64 in {0..K, 255}.
        across_processes: in a ``torch.distributed`` run (one shard of the batch per process), average
            each term over the pixels of the whole batch: the pixel counts are summed over processes
            (no gradient flows through counts) and the value is multiplied by the world size. Then the
            mean over processes of the returned values, and DDP's mean of their gradients, equal the
            loss and the gradient of one process holding the whole batch.
    """
    logits = F.interpolate(seg_logits.float(), size=pseudo_labels.shape[-2:], mode="bilinear",
                           align_corners=False)
    per_pixel = F.cross_entropy(logits, pseudo_labels, ignore_index=IGNORE_LABEL, reduction="none")
    background = pseudo_labels == 0
    foreground = (pseudo_labels > 0) & (pseudo_labels != IGNORE_LABEL)
    sums = torch.stack([per_pixel[background].sum(), per_pixel[foreground].sum()])
    counts = torch.stack([background.sum(), foreground.sum()]).to(sums.dtype)
    world_size = 1
    if across_processes and dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        if world_size > 1:
            dist.all_reduce(counts)
    # An empty term has sum 0, so clamping its count to 1 makes it 0 (and keeps the graph).
    return 0.5 * world_size * (sums / counts.clamp(min=1)).sum()
