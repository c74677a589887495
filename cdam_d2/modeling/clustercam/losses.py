"""ClusterCAM losses (spec §2.5)."""
from torch.nn import functional as F

from .pseudo_labels import IGNORE_LABEL

__all__ = ["classification_loss", "balanced_segmentation_loss"]


def classification_loss(logits, labels):
    """MultiLabelSoftMargin: mean over images and classes of the sigmoid BCE. (B, K), (B, K) -> scalar."""
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def balanced_segmentation_loss(seg_logits, pseudo_labels):
    """½(CE over background pixels + CE over foreground pixels); 255 ignored, an empty term is 0.

    Args:
        seg_logits: (B, K+1, h, w) decoder logits, upsampled bilinearly to the label size.
        pseudo_labels: (B, H, W) int64 in {0..K, 255}.
    """
    logits = F.interpolate(seg_logits.float(), size=pseudo_labels.shape[-2:], mode="bilinear",
                           align_corners=False)
    per_pixel = F.cross_entropy(logits, pseudo_labels, ignore_index=IGNORE_LABEL, reduction="none")
    background = pseudo_labels == 0
    foreground = (pseudo_labels > 0) & (pseudo_labels != IGNORE_LABEL)
    terms = [per_pixel[mask].mean() if mask.any() else per_pixel.sum() * 0 for mask in (background, foreground)]
    return 0.5 * (terms[0] + terms[1])
