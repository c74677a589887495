#!/usr/bin/env python
"""Write COCO 2014 semantic label PNGs (0 = background, 1..80, no 255) from the non-crowd instances."""
import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.coco14 import write_coco14_label_pngs

LAYOUT = """expected layout:
  ROOT/COCO14/{train2014,val2014}/<name>.jpg            train2014.zip / val2014.zip
  <instances dir>/instances_<split>.json                annotations_trainval2014.zip
                                                         (default dir: ROOT/COCO14/annotations)
writes:
  ROOT/COCO14/SegmentationClass/<split>/<name>.png      e.g. COCO_val2014_000000000042.png

One PNG per image with >= 1 instance annotation (the images of ImageSets/<split>.txt): non-crowd
annotations painted in list order (later wins), category ids sorted -> 1..80, crowd regions and
everything else 0. Only val2014 is needed for evaluation. Re-running skips finished files."""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    parser.add_argument("--instances-dir", help="folder with instances_<split>.json")
    parser.add_argument("--splits", nargs="+", default=["val2014"], help="default: val2014")
    args = parser.parse_args(argv)

    coco14_root = os.path.join(args.root, "COCO14")
    instances_dir = args.instances_dir or os.path.join(coco14_root, "annotations")
    for split in args.splits:
        summary = write_coco14_label_pngs(coco14_root, instances_dir, split, workers=args.workers)
        output_dir = os.path.join(coco14_root, "SegmentationClass", split)
        cli.report(summary, f"COCO14 {split}", output_dir)


if __name__ == "__main__":
    cli.run(main)
