#!/usr/bin/env python
"""ClusterCAM training augmentation: throughput and errors of the real pipeline over many draws.

    python benchmarks/bench_augmentation.py                 # 3000 draws per variant, 448x448 crops
    python benchmarks/bench_augmentation.py --draws 20000 --rounds 1

Draws go through ``ClusterCAMDatasetMapper`` built from configs/clustercam_voc.yaml (JPEG decode,
RandomResizedCrop 448, flip, RandAugment rand-m9-mstd0.5-inc1) on random 375x500 JPEGs. Two
variants take turns over the rounds: this package's pipeline (posterize kept in Pillow's range) and
timm's unchanged pipeline, whose zero-bit posterize Pillow >= 11 rejects. Prints draws/s (best
round) and the error count of each variant.
"""
import argparse
import collections
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def mappers():
    from timm.data.transforms_factory import transforms_imagenet_train
    from torchvision import transforms

    from cdam_d2.clustercam.mapper import ClusterCAMDatasetMapper
    from cdam_d2.clustercam.augmentation import IMAGENET_MEAN, IMAGENET_STD
    from cdam_d2.engine import load_cfg

    cfg = load_cfg(os.path.join(REPO, "configs", "clustercam_voc.yaml"), ["MODEL.DEVICE", "cpu"])[0]
    ours = ClusterCAMDatasetMapper(cfg, is_train=True)
    inp = cfg.MODEL.CLUSTERCAM.INPUT
    primary, secondary, _ = transforms_imagenet_train(
        img_size=inp.SIZE, scale=tuple(inp.CROP_SCALE), hflip=inp.HFLIP_PROB, color_jitter=None,
        auto_augment=inp.AUTO_AUGMENT, interpolation=inp.INTERPOLATION, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, separate=True)
    timm_pipeline = transforms.Compose([primary, secondary])
    timm_mapper = ClusterCAMDatasetMapper(
        is_train=True, image_format="RGB",
        train_transform=lambda image: np.asarray(timm_pipeline(image.convert("RGB")), dtype=np.uint8))
    return {"cdam_d2 (posterize in range)": ours, "timm unchanged": timm_mapper}


def run(mapper, records, draws):
    errors = collections.Counter()
    start = time.perf_counter()
    for draw in range(draws):
        try:
            out = mapper(records[draw % len(records)])
            assert out["image"].shape == (3, 448, 448)
        except ValueError as exc:
            errors[str(exc)] += 1
    return draws / (time.perf_counter() - start), errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3000, help="draws per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()

    import PIL
    import timm

    print(f"timm {timm.__version__}, Pillow {PIL.__version__}, {args.draws} draws x {args.rounds} rounds per variant")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for index in range(args.images):
            path = os.path.join(tmp, f"{index:04d}.jpg")
            Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(path, quality=90)
            records.append({"file_name": path, "image_labels": [1 + index % 20]})
        variants = mappers()
        rates = collections.defaultdict(list)
        errors = collections.defaultdict(collections.Counter)
        for round_index in range(args.rounds):
            for name, mapper in variants.items():
                rate, errs = run(mapper, records, args.draws)
                rates[name].append(rate)
                errors[name].update(errs)
                print(f"round {round_index}: {name}: {rate:.1f} draws/s, {sum(errs.values())} errors")
    print("| pipeline | draws | errors | draws/s (best round, range) |")
    print("|---|---|---|---|")
    for name in variants:
        total = sum(errors[name].values())
        kinds = "; ".join(f"{count}x {message}" for message, count in errors[name].items())
        print(f"| {name} | {args.draws * args.rounds} | {total}{' (' + kinds + ')' if kinds else ''} | "
              f"{max(rates[name]):.1f} ({min(rates[name]):.1f}-{max(rates[name]):.1f}) |")


if __name__ == "__main__":
    main()
