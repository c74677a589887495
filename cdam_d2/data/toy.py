"""Tiny synthetic datasets in every registered layout, for tests, quick schedules and demos.

``make_toy_datasets(root)`` writes coloured shapes on textured backgrounds; the label maps and
image-level labels match the drawn shapes exactly, so ``DETECTRON2_DATASETS=root`` makes every
``cdam_*`` dataset load offline.
"""
import json
import os
from typing import Dict

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .datasets.builtin_meta import voc_palette_bytes
from .datasets.layouts import LAYOUTS, SemSegLayout

IGNORE = 255
# Only a few classes appear so that toy training has something learnable.
TOY_FOREGROUND_IDS = (1, 2, 3)
_CLASS_RGB = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 80, 230)}
_NUM_IMAGES = {
    "cdam_voc21_sem_seg_val": 6,
    "cdam_voc21_sem_seg_train_aug": 16,
    "cdam_voc21_sem_seg_test": 3,
    "cdam_context60_sem_seg_val": 4,
    "cdam_coco_object_sem_seg_val": 4,
    "cdam_coco14_sem_seg_train": 8,
    "cdam_coco14_sem_seg_val": 4,
}
_ID_FORMAT = {
    "cdam_voc21_sem_seg_val": "2011_{:06d}",
    "cdam_voc21_sem_seg_train_aug": "2008_{:06d}",
    "cdam_voc21_sem_seg_test": "2009_{:06d}",
    "cdam_context60_sem_seg_val": "2010_{:06d}",
    "cdam_coco_object_sem_seg_val": "{:012d}",
    "cdam_coco14_sem_seg_train": "COCO_train2014_{:012d}",
    "cdam_coco14_sem_seg_val": "COCO_val2014_{:012d}",
}


def _draw_sample(rng: np.random.Generator, height: int, width: int, void_border: bool):
    """One RGB image, its (H, W) uint8 label map and the sorted foreground ids drawn on it."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(90, 170, size=3)
    texture = 25 * np.sin(xx[..., None] / rng.uniform(4, 9) + yy[..., None] / rng.uniform(5, 11))
    image = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    label = Image.new("L", (width, height), 0)
    draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
    num_shapes = int(rng.integers(1, 3))
    classes = rng.choice(TOY_FOREGROUND_IDS, size=num_shapes, replace=False)
    for class_id in classes:
        w, h = rng.integers(width // 4, width // 2), rng.integers(height // 4, height // 2)
        x0, y0 = rng.integers(0, width - w), rng.integers(0, height - h)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        shape = draw_image.ellipse if rng.random() < 0.5 else draw_image.rectangle
        shape(box, fill=_CLASS_RGB[int(class_id)])
        (draw_label.ellipse if shape == draw_image.ellipse else draw_label.rectangle)(
            box, fill=int(class_id)
        )
    label_array = np.array(label)
    if void_border:  # VOC marks object outlines as void
        grown = np.array(label.filter(ImageFilter.MaxFilter(3)))
        shrunk = np.array(label.filter(ImageFilter.MinFilter(3)))
        label_array[grown != shrunk] = IGNORE
    present = sorted(int(c) for c in np.unique(label_array) if c not in (0, IGNORE))
    return image, label_array, present


def _write_label(path: str, label: np.ndarray, palette: bool) -> None:
    image = Image.fromarray(label, mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette(voc_palette_bytes())
    image.save(path)


def _write_layout(root: str, layout: SemSegLayout, count: int, rng, image_labels: dict) -> None:
    os.makedirs(os.path.join(root, layout.image_dir), exist_ok=True)
    if layout.label_dir:
        os.makedirs(os.path.join(root, layout.label_dir), exist_ok=True)
    is_voc = layout.image_dir.startswith("VOCdevkit/VOC2012")
    ids = [_ID_FORMAT[layout.name].format(index + 1) for index in range(count)]
    for image_id in ids:
        height, width = (int(v) for v in rng.integers(72, 120, size=2))
        image, label, present = _draw_sample(rng, height, width, void_border=is_voc)
        image.save(os.path.join(root, layout.image_dir, image_id + layout.image_ext), quality=95)
        if layout.label_dir:
            palette = layout.label_dir.endswith("SegmentationClass") and is_voc
            path = os.path.join(root, layout.label_dir, image_id + layout.label_suffix)
            _write_label(path, label, palette)
        image_labels[image_id] = present  # shapes are far larger than the void outline
    if layout.split_file:
        split_path = os.path.join(root, layout.split_file)
        os.makedirs(os.path.dirname(split_path), exist_ok=True)
        with open(split_path, "w") as f:
            f.write("\n".join(ids) + "\n")


def make_toy_datasets(root: str, seed: int = 0) -> Dict[str, int]:
    """Write every registered layout under ``root``; returns {dataset name: number of images}."""
    rng = np.random.default_rng(seed)
    # An image-level label file covers every split stored below its folder (train and val).
    labels_by_file = {l.image_labels_file: {} for l in LAYOUTS.values() if l.image_labels_file}
    for name, layout in LAYOUTS.items():
        table = next(
            (t for f, t in labels_by_file.items() if layout.image_dir.startswith(os.path.dirname(f))),
            {},
        )
        if layout.label_dir is None and layout.image_labels_file is None:
            table = {}  # an images-only split (VOC test) has no labels of any kind
        _write_layout(root, layout, _NUM_IMAGES[name], rng, table)
    for labels_file, table in labels_by_file.items():
        with open(os.path.join(root, labels_file), "w") as f:
            json.dump(table, f, indent=0, sort_keys=True)
    return dict(_NUM_IMAGES)
