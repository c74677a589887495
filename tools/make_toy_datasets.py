#!/usr/bin/env python
"""Write tiny synthetic datasets in every registered layout: `DETECTRON2_DATASETS=OUT_DIR`."""
import argparse

from cdam_d2.data.toy import make_toy_datasets

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, count in make_toy_datasets(args.out_dir, seed=args.seed).items():
        print(f"{name}: {count} images")
    print(f"Now run with DETECTRON2_DATASETS={args.out_dir}")
