#!/usr/bin/env python
"""Write PASCAL VOC 2012 label maps as single-channel index PNGs (VOC21 and VOC20)."""

import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.voc_segmentation import (
    AUG_DIR,
    INDEX_DIR,
    VOC20_DIR,
    repair_palette_pngs,
    write_voc20_pngs,
    write_voc21_index_pngs,
)

LAYOUT = """expected layout under ROOT:
  VOCdevkit/VOC2012/SegmentationClass/<id>.png     VOCtrainval_11-May-2012.tar (palette PNGs)
  VOCdevkit/VOC2012/SegmentationClassAug/<id>.png  optional, SBD train_aug labels (checked)
writes:
  VOCdevkit/VOC2012/SegmentationClassRaw/<id>.png     uint8, 0 = background, 1..20, 255 = void
  VOCdevkit/VOC2012/SegmentationClassVOC20/<id>.png   uint8, 0..19, background and void 255

VOC's palette PNGs store class indices, but readers that convert them to grey (Detectron2's
DatasetMapper: read_image(path, "L")) get colour luminances (1 -> 38, 255 -> 220); the index PNGs
read the same everywhere. SegmentationClassAug is normally single-channel already: palette PNGs
found there are rewritten in place with the same indices. Re-running skips finished files."""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    args = parser.parse_args(argv)

    voc_root = os.path.join(args.root, "VOCdevkit", "VOC2012")
    summary = write_voc21_index_pngs(voc_root, workers=args.workers)
    cli.report(summary, "VOC21", os.path.join(voc_root, INDEX_DIR))
    summary = write_voc20_pngs(voc_root, workers=args.workers)
    cli.report(summary, "VOC20", os.path.join(voc_root, VOC20_DIR))
    aug_dir = os.path.join(voc_root, AUG_DIR)
    if os.path.isdir(aug_dir):
        rewritten, kept = repair_palette_pngs(aug_dir, workers=args.workers)
        print(f"{AUG_DIR}: {kept} index PNGs kept, {rewritten} palette PNGs rewritten -> {aug_dir}")


if __name__ == "__main__":
    cli.run(main)
