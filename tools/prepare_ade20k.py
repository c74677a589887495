#!/usr/bin/env python
"""Write ADE20K labels as Detectron2's ade20k_sem_seg_* read them (0..149, 255 = other)."""

import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.ade20k import SPLITS, write_detectron2_pngs

LAYOUT = """expected layout under ROOT:
  ADEChallengeData2016/images/<split>/<id>.jpg          ADEChallengeData2016.zip
  ADEChallengeData2016/annotations/<split>/<id>.png     same archive, 0 = other, 1..150
writes:
  ADEChallengeData2016/annotations_detectron2/<split>/<id>.png   uint8, 0..149, 255 = other

The same files as Detectron2's datasets/prepare_ade20k_sem_seg.py (value - 1, 0 -> 255), resumable
and checked (a value above 150 is reported). Splits: training and validation."""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    args = parser.parse_args(argv)

    ade_root = os.path.join(args.root, "ADEChallengeData2016")
    for split in args.splits:
        summary = write_detectron2_pngs(ade_root, split, workers=args.workers)
        output_dir = os.path.join(ade_root, "annotations_detectron2", split)
        cli.report(summary, f"ADE20K {split}", output_dir)


if __name__ == "__main__":
    cli.run(main)
