"""Tiny synthetic datasets in the raw layouts of the real downloads, for tests, quick schedules, demos.

``make_toy_datasets(root)`` draws coloured shapes on textured backgrounds and stores their labels
the way each real download does: VOC palette PNGs and SBD's index PNGs, PASCAL Context ``.mat``
files of 459-class indices with their ``labels.txt``, COCO-Stuff164k stuffthingmaps (COCO-Stuff
id - 1), Cityscapes label ids with the polygon json, ADE20K's 0..150 maps. It then runs the
preparation steps of ``tools/prepare_*.py`` (unless ``prepare=False``), so ``DETECTRON2_DATASETS=root``
makes every ``cdam_*`` dataset and Detectron2's ``cityscapes_fine_sem_seg_val`` and
``ade20k_sem_seg_val`` load offline. COCO-2014 is written as prepared (its labels come from
instance json files, tested on their own).

:func:`toy_label_maps` gives every split's true label maps, computed from the drawn shapes and the
class lists alone (not by the preparation code), so tests can check what readers get.
"""

import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..utils.files import save_json, save_lines
from .datasets.builtin_meta import CONTEXT59_FOREGROUND, voc_palette_bytes

IGNORE = 255
# Object colours of VOC/COCO-2014 classes 1..3, so that toy training has something learnable.
_CLASS_RGB = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 80, 230)}
# The toy PASCAL Context name list: the 59 classes among a few others, sorted as the real one.
CONTEXT_TOY_NAMES = tuple(sorted(CONTEXT59_FOREGROUND + ("accordion", "candleholder", "tv")))
CITYSCAPES_CITIES = ("frankfurt", "lindau")


def _context_raw(name):
    """1-based index of ``name`` in the toy ``labels.txt``."""
    return CONTEXT_TOY_NAMES.index(name) + 1


@dataclass(frozen=True)
class ToyClass:
    """One class of a toy family: its value in the raw files and its true label in each split."""

    name: str
    raw: int
    labels: Tuple[int, ...]  # one per split of the family (its ``splits`` order); 255 = ignored
    rgb: Optional[Tuple[int, int, int]] = None  # None: drawn as the textured background


@dataclass(frozen=True)
class ToySplit:
    name: str  # registered dataset name
    subset: str  # which subset of the family's images it reads
    has_labels: bool = True


@dataclass(frozen=True)
class ToyFamily:
    """Images stored once and read by one or more registered splits.

    ``classes[0]`` is the canvas: what is left where neither the background nor an object is drawn
    (a strip of ``margin`` rows at the bottom; none when ``margin`` is 0)."""

    key: str
    splits: Tuple[ToySplit, ...]
    subsets: Tuple[Tuple[str, str, int], ...]  # (subset, image id format, number of images)
    classes: Tuple[ToyClass, ...]
    backgrounds: Tuple[int, ...]  # indices into classes
    objects: Tuple[int, ...]
    outline: Optional[int] = None  # class drawn on object outlines (VOC void, COCO unlabeled)
    margin: int = 0
    size: Tuple[int, int] = (72, 120)  # height range; width range is the same unless ``wide``
    wide: bool = False  # Cityscapes: width = 2 x height


def _voc_classes(columns):
    background = ToyClass("background", 0, (0, IGNORE)[:columns])
    objects = [
        ToyClass(name, label, (label, label - 1)[:columns], _CLASS_RGB[label])
        for label, name in enumerate(("aeroplane", "bicycle", "bird"), start=1)
    ]
    void = ToyClass("void", IGNORE, (IGNORE, IGNORE)[:columns])
    return (background, *objects, void)


def _context_class(name, rgb=None):
    if name not in CONTEXT59_FOREGROUND:
        return ToyClass(name, _context_raw(name), (0, IGNORE), rgb)
    index = CONTEXT59_FOREGROUND.index(name)
    return ToyClass(name, _context_raw(name), (index + 1, index), rgb)


# COCO: raw value = COCO-Stuff id - 1; labels in (COCO-Object 0..80, COCO-Stuff 171) from the COCO
# category ids (person 1, dog 18, toothbrush 90; grass 124, sky-other 157).
_COCO_CLASSES = (
    ToyClass("unlabeled", 255, (0, IGNORE)),
    ToyClass("sky-other", 156, (0, 145)),
    ToyClass("grass", 123, (0, 112)),
    ToyClass("person", 0, (1, 0), _CLASS_RGB[1]),
    ToyClass("dog", 17, (17, 16), _CLASS_RGB[2]),
    ToyClass("toothbrush", 89, (80, 79), _CLASS_RGB[3]),
)
# Cityscapes: raw = label id; label = train id (cityscapesscripts' labels.py).
_CITYSCAPES_CLASSES = (
    ToyClass("unlabeled", 0, (IGNORE,)),
    ToyClass("road", 7, (0,)),
    ToyClass("sky", 23, (10,)),
    ToyClass("person", 24, (11,), (220, 20, 60)),
    ToyClass("car", 26, (13,), (0, 0, 142)),
    ToyClass("ego vehicle", 1, (IGNORE,), (30, 30, 30)),
)
# ADE20K: raw 0 = other, else 1 + index in Detectron2's ADE20K_SEM_SEG_CATEGORIES.
_ADE_CLASSES = (
    ToyClass("other", 0, (IGNORE,)),
    ToyClass("wall", 1, (0,)),
    ToyClass("sky", 3, (2,)),
    ToyClass("bed", 8, (7,), (200, 60, 60)),
    ToyClass("person", 13, (12,), (60, 200, 60)),
    ToyClass("car", 21, (20,), (60, 60, 200)),
)

FAMILIES = (
    ToyFamily(
        key="voc2012_val",
        splits=(
            ToySplit("cdam_voc21_sem_seg_val", "val"),
            ToySplit("cdam_voc20_sem_seg_val", "val"),
            ToySplit("cdam_voc21_sem_seg_test", "test", has_labels=False),  # VOC2012test.tar: images only
        ),
        subsets=(("val", "2011_{:06d}", 6), ("test", "2009_{:06d}", 3)),
        classes=_voc_classes(2),
        backgrounds=(0,),
        objects=(1, 2, 3),
        outline=4,
    ),
    ToyFamily(
        key="voc2012_train_aug",
        splits=(ToySplit("cdam_voc21_sem_seg_train_aug", "train_aug"),),
        subsets=(("train_aug", "2008_{:06d}", 16),),
        classes=_voc_classes(1),
        backgrounds=(0,),
        objects=(1, 2, 3),
        outline=4,
    ),
    ToyFamily(
        key="pascal_context",
        splits=(
            ToySplit("cdam_context60_sem_seg_val", "val"),
            ToySplit("cdam_context59_sem_seg_val", "val"),
        ),
        subsets=(("val", "2010_{:06d}", 4),),
        classes=(
            ToyClass("unlabeled", 0, (0, IGNORE)),
            _context_class("sky"),
            _context_class("accordion"),
            _context_class("aeroplane", _CLASS_RGB[1]),
            _context_class("bag", _CLASS_RGB[2]),
            _context_class("bed", _CLASS_RGB[3]),
        ),
        backgrounds=(1, 2),
        objects=(3, 4, 5),
        margin=2,
    ),
    ToyFamily(
        key="coco_stuff164k",
        splits=(
            ToySplit("cdam_coco_object_sem_seg_val", "val2017"),
            ToySplit("cdam_coco_stuff171_sem_seg_val", "val2017"),
        ),
        subsets=(("val2017", "{:012d}", 4),),
        classes=_COCO_CLASSES,
        backgrounds=(1, 2),
        objects=(3, 4, 5),
        outline=0,
        margin=2,
    ),
    ToyFamily(
        key="coco14",
        splits=(
            ToySplit("cdam_coco14_sem_seg_train", "train2014", has_labels=False),
            ToySplit("cdam_coco14_sem_seg_val", "val2014"),
        ),
        subsets=(
            ("train2014", "COCO_train2014_{:012d}", 8),
            ("val2014", "COCO_val2014_{:012d}", 4),
        ),
        classes=tuple(
            ToyClass(str(label), label, (label, label), _CLASS_RGB.get(label)) for label in range(4)
        ),
        backgrounds=(0,),
        objects=(1, 2, 3),
    ),
    ToyFamily(
        key="cityscapes",
        splits=(ToySplit("cityscapes_fine_sem_seg_val", "val"),),
        subsets=(("val", "{city}_000000_{index:06d}", 3),),
        classes=_CITYSCAPES_CLASSES,
        backgrounds=(1, 2),
        objects=(3, 4, 5),
        margin=3,
        size=(48, 64),
        wide=True,
    ),
    ToyFamily(
        key="ade20k",
        splits=(ToySplit("ade20k_sem_seg_val", "validation"),),
        subsets=(("training", "ADE_train_{:08d}", 2), ("validation", "ADE_val_{:08d}", 3)),
        classes=_ADE_CLASSES,
        backgrounds=(1, 2),
        objects=(3, 4, 5),
        margin=2,
    ),
)


@dataclass
class ToySample:
    image_id: str
    subset: str
    image: Image.Image
    class_map: np.ndarray  # (H, W) uint8 indices into the family's classes
    polygons: list  # [(class index, [(x, y), ...])] in drawing order


def _shape_polygon(rng, width, height):
    """A rectangle or an ellipse (as a 24-gon) covering a quarter to a half of each side."""
    w, h = rng.integers(width // 4, width // 2), rng.integers(height // 4, height // 2)
    x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    x1, y1 = x0 + int(w), y0 + int(h)
    if rng.random() < 0.5:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [
        (
            round(cx + rx * math.cos(2 * math.pi * k / 24)),
            round(cy + ry * math.sin(2 * math.pi * k / 24)),
        )
        for k in range(24)
    ]


def _draw_sample(rng, family: ToyFamily, image_id: str, subset: str, number: int) -> ToySample:
    height = int(rng.integers(*family.size))
    width = 2 * height if family.wide else int(rng.integers(*family.size))
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(90, 170, size=3)
    texture = 25 * np.sin(xx[..., None] / rng.uniform(4, 9) + yy[..., None] / rng.uniform(5, 11))
    image = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
    class_map = Image.new("L", (width, height), 0)
    draw_image, draw_map = ImageDraw.Draw(image), ImageDraw.Draw(class_map)
    background = family.backgrounds[number % len(family.backgrounds)]  # each one appears
    bottom = height - 1 - family.margin
    polygons = [(background, [(0, 0), (width - 1, 0), (width - 1, bottom), (0, bottom)])]
    num_objects = int(rng.integers(1, 3))
    for index in rng.choice(family.objects, size=num_objects, replace=False):
        polygons.append((int(index), _shape_polygon(rng, width, height)))
    for index, points in polygons:
        rgb = family.classes[index].rgb
        if rgb is not None:
            draw_image.polygon(points, fill=rgb)
        draw_map.polygon(points, fill=index)
    labels = np.array(class_map)
    if family.outline is not None:  # VOC marks object outlines as void
        grown = np.array(class_map.filter(ImageFilter.MaxFilter(3)))
        shrunk = np.array(class_map.filter(ImageFilter.MinFilter(3)))
        labels[grown != shrunk] = family.outline
    return ToySample(image_id, subset, image, labels, polygons)


def _samples(family: ToyFamily, seed: int):
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    samples = []
    for subset, id_format, count in family.subsets:
        for index in range(1, count + 1):
            city = CITYSCAPES_CITIES[index % len(CITYSCAPES_CITIES)]
            image_id = id_format.format(index, index=index, city=city)
            samples.append(_draw_sample(rng, family, image_id, subset, index))
    return samples


def _raw_values(family: ToyFamily, dtype=np.uint8):
    """Lookup table: class index -> value in the raw files."""
    return np.array([c.raw for c in family.classes], dtype=dtype)


def _true_labels(family: ToyFamily, column: int):
    """Lookup table: class index -> true label in the family's ``column``-th split."""
    return np.array([c.labels[column] for c in family.classes], dtype=np.uint8)


def toy_label_maps(seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    """{dataset name: {image id: true (H, W) uint8 label map}} of every split with label maps.

    The image id is the file name without extension (Cityscapes: without ``_leftImg8bit``)."""
    truth = {}
    for family in FAMILIES:
        samples = _samples(family, seed)
        for column, split in enumerate(family.splits):
            if split.has_labels:
                labels = _true_labels(family, column)
                truth[split.name] = {
                    s.image_id: labels[s.class_map] for s in samples if s.subset == split.subset
                }
    return truth


def _save_png(path, array, mode=None, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    if palette:
        image = image.convert("P")
        image.putpalette(voc_palette_bytes())
    image.save(path)


def _save_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, quality=95)


def _present_labels(labels):
    return sorted(int(v) for v in np.unique(labels) if v not in (0, IGNORE))


def _write_voc(root, family, samples, image_labels):
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    raw = _raw_values(family)
    aug = family.key == "voc2012_train_aug"
    for s in samples:
        _save_image(os.path.join(voc, "JPEGImages", s.image_id + ".jpg"), s.image)
        if s.subset == "test":
            continue  # the test tarball has images and the split list only
        folder = "SegmentationClassAug" if aug else "SegmentationClass"  # SBD: index; VOC: palette
        _save_png(os.path.join(voc, folder, s.image_id + ".png"), raw[s.class_map], "L", not aug)
        image_labels[s.image_id] = _present_labels(_true_labels(family, 0)[s.class_map])
    for subset, _, _ in family.subsets:
        save_lines([s.image_id for s in samples if s.subset == subset],
                   os.path.join(voc, "ImageSets", "Segmentation", f"{subset}.txt"))


def _write_context(root, family, samples):
    from scipy.io import savemat

    voc2010 = os.path.join(root, "VOCdevkit", "VOC2010")
    raw = _raw_values(family, np.uint16)
    for s in samples:
        _save_image(os.path.join(voc2010, "JPEGImages", s.image_id + ".jpg"), s.image)
        os.makedirs(os.path.join(voc2010, "trainval"), exist_ok=True)
        savemat(
            os.path.join(voc2010, "trainval", s.image_id + ".mat"), {"LabelMap": raw[s.class_map]}
        )
    save_lines([f"{i}: {n}" for i, n in enumerate(CONTEXT_TOY_NAMES, 1)], os.path.join(voc2010, "labels.txt"))
    save_lines([s.image_id for s in samples], os.path.join(voc2010, "ImageSets", "Main", "val.txt"))
    save_lines([], os.path.join(voc2010, "ImageSets", "Main", "train.txt"))


def _write_coco_stuff(root, family, samples):
    coco = os.path.join(root, "coco_stuff164k")
    raw = _raw_values(family)
    for s in samples:
        _save_image(os.path.join(coco, "images", s.subset, s.image_id + ".jpg"), s.image)
        _save_png(
            os.path.join(coco, "annotations", s.subset, s.image_id + ".png"), raw[s.class_map]
        )


def _write_coco14(root, family, samples, image_labels):
    coco14 = os.path.join(root, "COCO14")
    for subset, _, _ in family.subsets:
        subset_samples = [s for s in samples if s.subset == subset]
        for s in subset_samples:
            _save_image(os.path.join(coco14, subset, s.image_id + ".jpg"), s.image)
            image_labels[s.image_id] = _present_labels(s.class_map)
            if subset == "val2014":
                _save_png(
                    os.path.join(coco14, "SegmentationClass", subset, s.image_id + ".png"),
                    s.class_map,
                )
        save_lines([s.image_id for s in subset_samples], os.path.join(coco14, "ImageSets", f"{subset}.txt"))


def _write_cityscapes(root, family, samples):
    """leftImg8bit PNGs and gtFine label ids, instance ids and polygons as in gtFine_trainvaltest."""
    cityscapes = os.path.join(root, "cityscapes")
    raw = _raw_values(family)
    for s in samples:
        city = s.image_id.split("_")[0]
        _save_image(
            os.path.join(
                cityscapes, "leftImg8bit", s.subset, city, f"{s.image_id}_leftImg8bit.png"
            ),
            s.image,
        )
        gt = os.path.join(cityscapes, "gtFine", s.subset, city, f"{s.image_id}_gtFine_")
        label_ids = raw[s.class_map]
        _save_png(gt + "labelIds.png", label_ids)
        # Instance ids: label id for stuff, label id * 1000 + instance number for things.
        instance_ids = label_ids.astype(np.uint16)
        for number, (index, points) in enumerate(s.polygons):
            if family.classes[index].name in ("person", "car"):
                mask = Image.new("L", s.image.size, 0)
                ImageDraw.Draw(mask).polygon(points, fill=1)
                instance_ids[np.array(mask, dtype=bool) & (s.class_map == index)] = (
                    family.classes[index].raw * 1000 + number
                )
        _save_png(gt + "instanceIds.png", instance_ids)  # 16-bit, as the download
        objects = [
            {"label": family.classes[index].name, "polygon": [list(p) for p in points]}
            for index, points in s.polygons
        ]
        height, width = s.class_map.shape
        save_json({"imgHeight": height, "imgWidth": width, "objects": objects}, gt + "polygons.json", indent=0)


def _write_ade20k(root, family, samples):
    ade = os.path.join(root, "ADEChallengeData2016")
    raw = _raw_values(family)
    for s in samples:
        _save_image(os.path.join(ade, "images", s.subset, s.image_id + ".jpg"), s.image)
        _save_png(os.path.join(ade, "annotations", s.subset, s.image_id + ".png"), raw[s.class_map])


def write_raw_toy_datasets(root: str, seed: int = 0) -> Dict[str, int]:
    """Write every toy family in its raw download layout; returns {dataset name: number of images}."""
    voc_labels, coco14_labels = {}, {}
    writers = {
        "voc2012_val": lambda f, s: _write_voc(root, f, s, voc_labels),
        "voc2012_train_aug": lambda f, s: _write_voc(root, f, s, voc_labels),
        "pascal_context": lambda f, s: _write_context(root, f, s),
        "coco_stuff164k": lambda f, s: _write_coco_stuff(root, f, s),
        "coco14": lambda f, s: _write_coco14(root, f, s, coco14_labels),
        "cityscapes": lambda f, s: _write_cityscapes(root, f, s),
        "ade20k": lambda f, s: _write_ade20k(root, f, s),
    }
    counts = {}
    for family in FAMILIES:
        samples = _samples(family, seed)
        writers[family.key](family, samples)
        for split in family.splits:
            counts[split.name] = sum(s.subset == split.subset for s in samples)
    # Image-level labels (what tools/prepare_image_labels.py writes) cover train and val.
    save_json(voc_labels, os.path.join(root, "VOCdevkit", "VOC2012", "image_labels.json"), indent=0)
    save_json(coco14_labels, os.path.join(root, "COCO14", "image_labels.json"), indent=0)
    return counts


def prepare_toy_datasets(root: str) -> None:
    """Run the preparation steps of ``tools/prepare_*.py`` on a raw toy root (no process pool)."""
    from .prepare import (
        ade20k,
        cityscapes,
        coco_object,
        coco_stuff,
        pascal_context,
        voc_segmentation,
    )

    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    voc_segmentation.write_voc21_index_pngs(voc)
    voc_segmentation.write_voc20_pngs(voc)
    voc2010 = os.path.join(root, "VOCdevkit", "VOC2010")
    pascal_context.write_context_splits(voc2010, voc2010)
    pascal_context.write_context60_pngs(voc2010, os.path.join(voc2010, "SegmentationClassContext"))
    pascal_context.write_context59_pngs(
        voc2010, os.path.join(voc2010, "SegmentationClassContext59")
    )
    coco_stuff_root = os.path.join(root, "coco_stuff164k")
    coco_object.prepare_from_stuffthingmaps(coco_stuff_root, "val2017")
    coco_stuff.prepare_coco_stuff171(coco_stuff_root, "val2017")
    cityscapes.write_train_id_pngs(os.path.join(root, "cityscapes"), "val")
    for split in ade20k.SPLITS:
        ade20k.write_detectron2_pngs(os.path.join(root, "ADEChallengeData2016"), split)


def make_toy_datasets(root: str, seed: int = 0, prepare: bool = True) -> Dict[str, int]:
    """Write every toy dataset under ``root`` (raw layouts, then prepared unless ``prepare`` is
    False); returns {dataset name: number of images}."""
    counts = write_raw_toy_datasets(root, seed)
    if prepare:
        prepare_toy_datasets(root)
    return counts
