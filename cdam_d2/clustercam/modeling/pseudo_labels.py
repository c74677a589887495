"""On-the-fly pseudo-labels, computed from the current weights: multi-scale CAMs, background band and PAR."""
import torch
from torch.nn import functional as F

__all__ = [
    "IGNORE_LABEL",
    "multiscale_cams",
    "normalize_cams",
    "denormalize_to_unit",
    "refine_with_background_band",
    "cams_to_labels",
]

IGNORE_LABEL = 255


def multiscale_cams(net, images, scales=(1.0, 0.75, 1.25)):
    """Sum over scales of ReLU(max(CAM, un-flipped CAM of the flipped image)).

    Args:
        net: a ``ClusterCAMNet``; its train/eval mode is used as is.
        images: (B, 3, H, W) normalised images.

    Returns:
        (B, K, H, W) float32, not normalised.
    """
    batch, _, height, width = images.shape
    total = None
    for scale in scales:
        size = (int(scale * height), int(scale * width))
        scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        cams = net.forward_cams(torch.cat([scaled, scaled.flip(-1)], dim=0)).float()
        cams = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
        cams = F.relu(torch.maximum(cams[:batch], cams[batch:].flip(-1)))
        total = cams if total is None else total + cams
    return total


def normalize_cams(cams, labels):
    """Per (image, class) min-max to [0, 1), then zero the classes not in the image.

    Args:
        cams: (B, K, H, W); labels: (B, K) multi-hot.
    """
    cams = cams - cams.flatten(2).min(dim=-1).values[..., None, None]
    cams = cams / (cams.flatten(2).max(dim=-1).values[..., None, None] + 1e-5)
    return cams * labels[..., None, None].to(cams.dtype)


def denormalize_to_unit(images, pixel_mean, pixel_std):
    """Normalised (B, 3, H, W) -> RGB in [0, 1] through clamped, floored 0..255 values.

    The release casts to uint8, which truncates and is undefined for RandomErasing noise outside 0..255.

    pixel_mean / pixel_std: (3, 1, 1) on the 0..255 scale.
    """
    return (images.float() * pixel_std + pixel_mean).clamp(0, 255).floor() / 255


def refine_with_background_band(cams, labels, images_unit, par, bg_thr=0.40, delta=0.10):
    """AFA's two-threshold background band plus PAR, as released.

    Args:
        cams: (B, K, H, W) normalised, label-masked CAMs in [0, 1).
        labels: (B, K) multi-hot.
        images_unit: (B, 3, H, W) RGB in [0, 1]; PAR runs at half its resolution.
        par: a ``PAR`` module.

    Returns:
        (B, H, W) int64 labels in {0} ∪ {c+1 : labels[c] = 1} ∪ {255}: confident foreground where the
        class beats τ_h = bg_thr + delta after PAR, background where the background beats every class
        at τ_l = bg_thr - delta, ignore in between.
    """
    batch, _, height, width = cams.shape
    half = (height // 2, width // 2)
    small_images = F.interpolate(images_unit, size=half, mode="bilinear", align_corners=False)
    out = torch.full((batch, height, width), IGNORE_LABEL, dtype=torch.long, device=cams.device)
    for b in range(batch):
        present = labels[b].nonzero().flatten()
        class_scores = cams[b, present]
        stacks = []
        for threshold in (bg_thr + delta, bg_thr - delta):
            background = cams.new_full((1, height, width), threshold)
            stack = torch.cat([background, class_scores], dim=0).unsqueeze(0)
            stack = F.interpolate(stack, size=half, mode="bilinear", align_corners=False)
            stacks.append(stack.softmax(dim=1))
        # PAR treats channels independently, so both stacks are refined in one call.
        refined = par(small_images[b:b + 1], torch.cat(stacks, dim=1))
        refined = F.interpolate(refined, size=(height, width), mode="bilinear", align_corners=False)
        ids = torch.cat([present.new_zeros(1), present + 1])
        high, low = (ids[part.argmax(dim=1)[0]] for part in refined.split(len(ids), dim=1))
        out[b] = torch.where(high != 0, high, torch.where(low == 0, torch.zeros_like(low), out[b]))
    return out


def cams_to_labels(cams, bg_thr):
    """Plain CAM label map without PAR: argmax over [bg_thr; cams]. (B, K, H, W) -> (B, H, W) in 0..K."""
    background = torch.full_like(cams[:, :1], bg_thr)
    return torch.cat([background, cams], dim=1).argmax(dim=1)
