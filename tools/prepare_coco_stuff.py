#!/usr/bin/env python
"""Write COCO-Stuff 171-class labels (0..170, 255 = unlabeled) into coco_stuff164k."""

import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.coco_stuff import prepare_coco_stuff171

LAYOUT = """expected layout under ROOT:
  coco_stuff164k/images/val2017/<id>.jpg           COCO val2017 images (used by the dataset)
  coco_stuff164k/annotations/val2017/<id>.png      stuffthingmaps_trainval2017.zip
writes:
  coco_stuff164k/annotations/<split>/<id>_labelTrainIds.png   uint8, 0..170, 255 = unlabeled

Raw values (COCO-Stuff id - 1) 0..181 without the eleven unused 11,25,28,29,44,65,67,68,70,82,90
-> 0..170 in ascending order (80 things, then 91 stuff classes: mmseg's COCOStuffDataset order);
unlabeled 255 stays 255; names containing "TrainIds" are skipped. Re-running skips finished
files."""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    parser.add_argument(
        "--splits", nargs="+", default=["val2017"], help="default: val2017 (the evaluated split)"
    )
    args = parser.parse_args(argv)

    coco_stuff_root = os.path.join(args.root, "coco_stuff164k")
    for split in args.splits:
        summary = prepare_coco_stuff171(coco_stuff_root, split, workers=args.workers)
        output_dir = os.path.join(coco_stuff_root, "annotations", split)
        cli.report(summary, f"COCO-Stuff 171 {split}", output_dir)


if __name__ == "__main__":
    cli.run(main)
