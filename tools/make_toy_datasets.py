#!/usr/bin/env python
"""Write tiny synthetic datasets in every registered layout: `DETECTRON2_DATASETS=OUT_DIR`.

The files are first written as the real downloads store them (VOC palette PNGs, PASCAL Context
.mat files, COCO-Stuff stuffthingmaps, Cityscapes label ids, ADE20K 0..150), then prepared with the
same steps as tools/prepare_*.py; --raw-only stops before the preparation (to try the tools)."""
import argparse

from cdam_d2.data.toy import make_toy_datasets

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-only", action="store_true", help="skip the preparation steps")
    args = parser.parse_args()
    counts = make_toy_datasets(args.out_dir, seed=args.seed, prepare=not args.raw_only)
    for name, count in counts.items():
        print(f"{name}: {count} images")
    if args.raw_only:
        print(f"Raw layouts only: run tools/prepare_*.py {args.out_dir} before using them")
    else:
        print(f"Now run with DETECTRON2_DATASETS={args.out_dir}")
