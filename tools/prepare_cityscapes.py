#!/usr/bin/env python
"""Write Cityscapes 19-class train-id label maps (*_gtFine_labelTrainIds.png)."""

import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.cityscapes import gt_fine_splits, write_train_id_pngs

LAYOUT = """expected layout under ROOT:
  cityscapes/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png     leftImg8bit_trainvaltest.zip
  cityscapes/gtFine/<split>/<city>/<name>_gtFine_labelIds.png      gtFine_trainvaltest.zip
writes:
  cityscapes/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png  uint8, 0..18, 255 = ignored

Label ids 7,8,11,12,13,17,19..28,31,32,33 -> train ids 0..18; all other ids -> 255. Gives the same
files as cityscapesscripts' createTrainIdLabelImgs (which draws them from the polygons json).
Re-running skips finished files."""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    parser.add_argument(
        "--splits", nargs="+", help="default: every folder of gtFine/ (train, val, test)"
    )
    args = parser.parse_args(argv)

    cityscapes_root = os.path.join(args.root, "cityscapes")
    for split in args.splits or gt_fine_splits(cityscapes_root):
        summary = write_train_id_pngs(cityscapes_root, split, workers=args.workers)
        cli.report(summary, f"Cityscapes {split}", os.path.join(cityscapes_root, "gtFine", split))


if __name__ == "__main__":
    cli.run(main)
