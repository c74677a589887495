"""Pictures of a segmentation: a colour overlay with a legend beside the image, and label PNGs.

The legend lives on an extended canvas to the right of the image, in as many columns as its entries need,
so it never covers the picture and is never cut off; small images are rendered at a minimum scale so the
legend stays legible.
"""
import colorsys
import os
from typing import List, Optional, Sequence

import numpy as np

MIN_RENDER_SIDE = 512  # short side of the rendered image, at least
MAX_NAME_CHARS = 32


def class_colors(names: Sequence[str]) -> np.ndarray:
    """(C, 3) uint8 RGB colours of the classes ``names``: golden-angle hues at three brightness levels, so
    neighbouring indices are well apart; a class named "background" is dark grey, so it dims the photo
    instead of painting it."""
    colors = []
    for index, name in enumerate(names):
        hue = (index * 0.618033988749895) % 1.0
        saturation, value = ((0.65, 0.95), (0.85, 0.75), (0.45, 0.85))[index % 3]
        rgb = (0.16, 0.16, 0.16) if name.strip().lower() == "background" else colorsys.hsv_to_rgb(hue, saturation, value)
        colors.append([round(255 * c) for c in rgb])
    return np.array(colors, dtype=np.uint8).reshape(len(names), 3)


def legend_font(size: int):
    """A scalable TrueType font: matplotlib's DejaVu Sans (a Detectron2 dependency), else Pillow's own."""
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


def blend(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, opacity: float) -> np.ndarray:
    """(H, W, 3) uint8 image, (H, W) labels -> (H, W, 3) uint8 ``(1 - opacity) * image + opacity * colour``
    (integer arithmetic, so a 12-megapixel photo needs no float copies)."""
    weight = int(round(256 * opacity))
    mixed = image.astype(np.uint16) * (256 - weight)
    mixed += colors[labels].astype(np.uint16) * weight
    return (mixed >> 8).astype(np.uint8)


def legend_entries(labels: np.ndarray, names: Sequence[str]) -> List[tuple]:
    """(class index, name, area fraction) of the classes present, largest first."""
    counts = np.bincount(labels.ravel(), minlength=len(names))
    present = [index for index in np.argsort(-counts, kind="stable") if counts[index] > 0]
    return [(int(index), names[index], counts[index] / labels.size) for index in present]


def shorten(name: str, limit: int = MAX_NAME_CHARS) -> str:
    return name if len(name) <= limit else name[:limit - 1].rstrip() + "\u2026"


def render_overlay(image: np.ndarray, labels: np.ndarray, names: Sequence[str], opacity: float = 0.5,
                   colors: Optional[np.ndarray] = None, min_side: int = MIN_RENDER_SIDE):
    """The overlay of ``labels`` on ``image`` with a legend (colour, name, area) of the classes present.

    Args:
        image: (H, W, 3) uint8 RGB; labels: (H, W) class indices into ``names``.
        opacity: weight of the class colours, in [0, 1].
        min_side: images whose short side is smaller are enlarged to it (nearest labels, bilinear pixels).
    Returns:
        A PIL RGB image: the overlay (at least ``min_side`` on its short side) with the legend to its right.
    """
    from PIL import Image, ImageDraw

    colors = class_colors(names) if colors is None else colors
    entries = legend_entries(labels, names)
    height, width = labels.shape
    scale = max(1.0, min_side / min(height, width))
    if scale > 1:
        size = (round(width * scale), round(height * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.NEAREST))
    picture = Image.fromarray(blend(image, labels, colors, opacity))

    font_size = int(np.clip(picture.height / 30, 14, 48))
    font = legend_font(font_size)
    row = round(font_size * 1.6)
    pad = font_size
    names_shown = [shorten(name) for _, name, _ in entries]
    areas_shown = [f"{100 * area:.1f}%" for _, _, area in entries]
    name_width = max(font.getlength(text) for text in names_shown)
    area_width = max(font.getlength(text) for text in areas_shown)
    swatch = row - font_size // 2
    column_width = int(np.ceil(swatch + pad // 2 + name_width + pad + area_width + 2 * pad))
    per_column = max(1, (picture.height - 2 * pad) // row)
    columns = -(-len(entries) // per_column)
    canvas = Image.new("RGB", (picture.width + pad + columns * column_width,
                               max(picture.height, 2 * pad + min(per_column, len(entries)) * row)), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for position, (index, _, _) in enumerate(entries):
        column, line = divmod(position, per_column)
        x = picture.width + pad + column * column_width
        y = pad + line * row
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(c) for c in colors[index]), outline="black")
        middle = y + swatch / 2
        draw.text((x + swatch + pad // 2, middle), names_shown[position], fill="black", font=font, anchor="lm")
        draw.text((x + column_width - 2 * pad, middle), areas_shown[position], fill="#444444", font=font, anchor="rm")
    return canvas


def save_label_png(labels: np.ndarray, path: str, colors: Optional[np.ndarray] = None) -> None:
    """Write class indices as a PNG whose pixel values ARE the indices: a palette PNG (8 bits, coloured with
    ``colors`` for viewing) for up to 256 classes, else a 16-bit greyscale PNG."""
    from PIL import Image

    if labels.size and labels.max() > 255:
        Image.fromarray(labels.astype(np.uint16)).save(path)
        return
    picture = Image.fromarray(labels.astype(np.uint8))  # "L"; putpalette makes it "P"
    palette = np.zeros((256, 3), dtype=np.uint8)
    if colors is not None:
        palette[:len(colors)] = colors[:256]
    picture.putpalette(palette.ravel().tolist())
    picture.save(path)
