"""Panels of maps: a grid of titled tiles (pictures, label maps with legends, heat maps with colour bars).

A method's visualisation builds its tiles from the model's tensors (``panel_tiles`` in
``cdam_d2/<method>/visualize.py``), and :func:`compose` draws them, so that tests can check each tile's
values before any colouring. What a tile's array holds decides how it is drawn:

- (H, W, 3) uint8: a picture, shown as is;
- (h, w) integer: a label map in the class colours of :func:`cdam_d2.engine.overlay.class_colors`
  (the ignore value 255 in white), with a legend of the classes it holds;
- (h, w) float: a heat map on the ``jet`` colour map from its minimum to its maximum, over ``background``
  (a picture of the same region) when given, with a colour bar giving the scale.

Maps smaller than the tile are enlarged without smoothing (each patch stays a visible square).
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .overlay import class_colors, legend_font, shorten

__all__ = ["Tile", "compose", "IGNORE_VALUE"]

IGNORE_VALUE = 255
IGNORE_COLOR = (255, 255, 255)
HEAT_OPACITY = 0.6  # weight of the heat colours over the picture


class Tile(NamedTuple):
    """One cell of a panel.

    Attributes:
        title: shown above the map.
        array: the map (see the module docstring for the three kinds).
        background: (H, W, 3) uint8 picture under a heat map, or None.
        marker: (row, column) of the array cell to outline (e.g. a chosen patch), or None.
        new_row: start a new row of the panel with this tile.
    """

    title: str
    array: np.ndarray
    background: Optional[np.ndarray] = None
    marker: Optional[Tuple[int, int]] = None
    new_row: bool = False


def tile_kind(array: np.ndarray) -> str:
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return "picture"
    if array.ndim == 2 and array.dtype.kind in "iub":
        return "labels"
    if array.ndim == 2 and array.dtype.kind == "f":
        return "heat"
    raise ValueError(f"tile array of dtype {array.dtype} and shape {array.shape} is neither an (H, W, 3) uint8 "
                     "picture, an (h, w) integer label map nor an (h, w) float heat map")


def _resize(array, size, nearest):
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def heat_colors(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 ``jet`` colours of (values - vmin) / (vmax - vmin), clipped to [0, 1]."""
    from matplotlib import colormaps

    scaled = (values - vmin) / (vmax - vmin) if vmax > vmin else np.zeros_like(values)
    return (colormaps["jet"](np.clip(scaled, 0, 1))[..., :3] * 255).astype(np.uint8)


class _Style:
    def __init__(self, height):
        self.height = height
        self.font_size = max(12, height // 16)
        self.font = legend_font(self.font_size)
        self.small = legend_font(max(10, self.font_size - 2))
        self.pad = self.font_size // 2
        self.title_height = round(1.5 * self.font_size)
        self.bar_width = max(10, height // 20)
        self.row = round(1.4 * self.font_size)


def _draw_picture(tile, kind, colors, style):
    """(picture (h', w', 3) uint8 at the tile height, (min, max) of a heat map or None)."""
    array = tile.array
    height = style.height
    width = max(1, round(array.shape[1] * height / array.shape[0]))
    if kind == "picture":
        return _resize(array, (width, height), nearest=False), None
    if kind == "labels":
        palette = np.zeros((256, 3), np.uint8)
        palette[:len(colors)] = colors[:256]
        palette[IGNORE_VALUE] = IGNORE_COLOR
        return _resize(palette[np.clip(array, 0, 255).astype(np.uint8)], (width, height), nearest=True), None
    finite = array[np.isfinite(array)]
    scale = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    heat = _resize(heat_colors(np.nan_to_num(array.astype(np.float32)), *scale), (width, height), nearest=True)
    if tile.background is not None:
        under = _resize(tile.background, (width, height), nearest=False).astype(np.float32)
        heat = (HEAT_OPACITY * heat + (1 - HEAT_OPACITY) * under).astype(np.uint8)
    return heat, scale


def _legend_entries(array, names):
    values = np.unique(array)
    entries = [(int(v), shorten(names[v], 20) if v < len(names) else f"class {v}") for v in values
               if v != IGNORE_VALUE]
    if IGNORE_VALUE in values:
        entries.append((IGNORE_VALUE, "ignore"))
    return entries


def _cell(tile, names, colors, style):
    """A PIL image of one tile: title, map (with a colour bar or legend)."""
    from PIL import Image, ImageDraw

    kind = tile_kind(tile.array)
    picture, scale = _draw_picture(tile, kind, colors, style)
    pad = style.pad
    bar = style.bar_width + pad + round(style.small.getlength("0.000e-00")) if kind == "heat" else 0
    entries = _legend_entries(tile.array, names) if kind == "labels" else []
    width = picture.shape[1] + bar
    column = max([round(style.row + pad + style.small.getlength(name)) for _, name in entries] or [1]) + pad
    per_row = max(1, width // column)
    legend_height = -(-len(entries) // per_row) * style.row + (pad if entries else 0)
    cell = Image.new("RGB", (width, style.title_height + picture.shape[0] + legend_height), "white")
    draw = ImageDraw.Draw(cell)
    title = tile.title
    while style.font.getlength(title) > width and len(title) > 2:
        title = title.rstrip("\u2026")[:-1].rstrip() + "\u2026"
    draw.text((width // 2, style.title_height // 2), title, fill="black", font=style.font, anchor="mm")
    top = style.title_height
    cell.paste(Image.fromarray(picture), (0, top))
    if tile.marker is not None:
        row, col = tile.marker
        scale_y = picture.shape[0] / tile.array.shape[0]
        scale_x = picture.shape[1] / tile.array.shape[1]
        box = [col * scale_x, top + row * scale_y, (col + 1) * scale_x - 1, top + (row + 1) * scale_y - 1]
        draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], outline="black", width=2)
        draw.rectangle(box, outline="white", width=2)
    if kind == "heat":
        x0 = picture.shape[1] + pad // 2
        gradient = heat_colors(np.linspace(1, 0, picture.shape[0])[:, None].repeat(style.bar_width, 1), 0.0, 1.0)
        cell.paste(Image.fromarray(gradient), (x0, top))
        draw.rectangle([x0, top, x0 + style.bar_width - 1, top + picture.shape[0] - 1], outline="black")
        vmin, vmax = scale
        for fraction, value in ((0.0, vmax), (0.5, (vmin + vmax) / 2), (1.0, vmin)):
            y = top + fraction * (picture.shape[0] - 1)
            anchor = "lt" if fraction == 0 else ("lb" if fraction == 1 else "lm")
            draw.text((x0 + style.bar_width + 3, y), f"{value:.3g}", fill="black", font=style.small, anchor=anchor)
    for index, (value, name) in enumerate(entries):
        line, position = divmod(index, per_row)
        x = position * column
        y = top + picture.shape[0] + pad + line * style.row
        swatch = style.row - pad
        color = IGNORE_COLOR if value == IGNORE_VALUE else tuple(int(c) for c in colors[min(value, len(colors) - 1)])
        draw.rectangle([x, y, x + swatch, y + swatch], fill=color, outline="black")
        draw.text((x + swatch + pad // 2, y + swatch / 2), name, fill="black", font=style.small, anchor="lm")
    return cell


def compose(tiles: Sequence[Tile], class_names: Sequence[str], columns: int = 4, tile_height: int = 240,
            colors: Optional[np.ndarray] = None, title: str = "") -> np.ndarray:
    """Draw ``tiles`` row by row (``columns`` per row, or fewer where a tile starts a new row).

    Args:
        title: a heading above the grid (e.g. the image id), or "".
        class_names: names of the label values, for the legends.
        tile_height: height of every map in pixels (widths follow each map's aspect ratio).
        colors: (C, 3) uint8 class colours; default :func:`class_colors` of ``class_names``.

    Returns:
        (H, W, 3) uint8 RGB panel.
    """
    from PIL import Image, ImageDraw

    if not tiles:
        raise ValueError("a panel needs at least one tile")
    colors = class_colors(class_names) if colors is None else colors
    style = _Style(tile_height)
    rows, row = [], []
    for tile in tiles:
        if row and (tile.new_row or len(row) == columns):
            rows.append(row)
            row = []
        row.append(_cell(tile, class_names, colors, style))
    rows.append(row)
    gap = 2 * style.pad
    widths = [max((r[i].width for r in rows if i < len(r)), default=0) for i in range(columns)]
    heights = [max(cell.height for cell in r) for r in rows]
    heading = round(1.8 * style.font_size) if title else 0
    panel = Image.new("RGB", (sum(widths) + gap * (columns + 1), heading + sum(heights) + gap * (len(rows) + 1)),
                      "white")
    if title:
        ImageDraw.Draw(panel).text((gap, gap), title, fill="black", font=legend_font(round(1.3 * style.font_size)))
    y = gap + heading
    for r, height in zip(rows, heights):
        x = gap
        for index, cell in enumerate(r):
            panel.paste(cell, (x, y))
            x += widths[index] + gap
        y += height + gap
    return np.asarray(panel)
