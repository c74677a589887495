#!/usr/bin/env python
"""Write PASCAL Context 60-class (0 = background, 1..59) and 59-class (0..58, background ignored)
labels and the split lists. Context60 equals the labels of mmseg's converter, on which CDAM's release is
evaluated."""
import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.pascal_context import (
    write_context59_pngs,
    write_context60_pngs,
    write_context_splits,
)

LAYOUT = """expected layout under ROOT (context dir = ROOT/VOCdevkit/VOC2010 unless --context-dir):
  VOCdevkit/VOC2010/JPEGImages/<id>.jpg              VOCtrainval_03-May-2010.tar
  VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt   same archive (default split source)
  <context dir>/trainval/<id>.mat                    PASCAL Context trainval.tar.gz (LabelMap)
  <context dir>/labels.txt                           459 names, lines like "1: accordion"
writes:
  VOCdevkit/VOC2010/SegmentationClassContext/<id>.png        uint8, 0 = background, 1..59
  VOCdevkit/VOC2010/SegmentationClassContext59/<id>.png      uint8, 0..58, background 255
  VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt

The 59 classes are matched by name in mmseg's PascalContext60 order (aeroplane, bag, ..., wood);
all other classes become background (Context60: 0; Context59: 255 = ignored, the other labels one
lower, as mmseg's reduce_zero_label). Splits: VOC2010 Main train/val (4998/5105 ids) intersected
with the .mat files, or --train-list/--val-list. Re-running skips finished PNGs."""

WRITERS = {
    "60": ("Context60", "SegmentationClassContext", write_context60_pngs),
    "59": ("Context59", "SegmentationClassContext59", write_context59_pngs),
}


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    parser.add_argument("--context-dir", help="folder with trainval/ and labels.txt")
    parser.add_argument("--train-list", help="official train id list (instead of VOC2010 Main)")
    parser.add_argument("--val-list", help="official val id list (instead of VOC2010 Main)")
    parser.add_argument(
        "--classes", nargs="+", choices=sorted(WRITERS), default=["60", "59"],
        help="which label sets to write (default: both)",
    )
    args = parser.parse_args(argv)
    if (args.train_list is None) != (args.val_list is None):
        parser.error("give both --train-list and --val-list, or neither")

    voc2010_root = os.path.join(args.root, "VOCdevkit", "VOC2010")
    context_dir = args.context_dir or voc2010_root
    list_paths = args.train_list and {"train": args.train_list, "val": args.val_list}
    splits = write_context_splits(voc2010_root, context_dir, list_paths)
    for split, (ids, without_mat) in splits.items():
        print(f"Context {split}: {len(ids)} ids")
        if without_mat:
            print(f"warning: {len(without_mat)} {split} ids have no .mat, e.g. {without_mat[0]}")
    for classes in args.classes:
        what, folder, write = WRITERS[classes]
        output_dir = os.path.join(voc2010_root, folder)
        cli.report(write(context_dir, output_dir, workers=args.workers), what, output_dir)


if __name__ == "__main__":
    cli.run(main)
