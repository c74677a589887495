#!/usr/bin/env python
"""The training-free papers' table: methods x VOC21, Context60, COCO-Object, VOC20, Context59,
COCO-Stuff, Cityscapes, ADE20K, Average (mIoU), one --eval-only evaluation per cell, resumable.

    python tools/benchmark_table.py --method cdam --method variants:sclip_baseline \\
        --opts MODEL.CDAM.CLIP_WEIGHTS /path/to/ViT-B-16.pt

Guide: docs/BENCHMARK_TABLE.md.
"""
import os

from cdam_d2.cdam.benchmark_table import main

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

if __name__ == "__main__":
    main(default_configs_root=CONFIGS)
