#!/usr/bin/env python
"""Write COCO-Object labels (0 = background, 1..80 things) into coco_stuff164k, as CDAM's
released converter does."""
import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.coco_object import (
    IMAGES_HINT,
    images_without_labels,
    prepare_from_instances,
    prepare_from_stuffthingmaps,
)

LAYOUT = """expected layout under ROOT:
  coco_stuff164k/images/val2017/<id>.jpg                  COCO val2017 images (used by the dataset)
  coco_stuff164k/annotations/val2017/<id>.png             --source stuffthingmaps (default):
  coco_stuff164k/annotations/train2017/<id>.png             stuffthingmaps_trainval2017.zip
  coco_stuff164k/annotations/instances_val2017.json       --source instances (or --instances-dir)
writes:
  coco_stuff164k/annotations/<split>/<id>_instanceTrainIds.png   uint8, 0 = background, 1..80

stuffthingmaps: raw things 0..89 minus the unused 11,25,28,29,44,65,67,68,70,82 -> 1..80 in
ascending order; stuff 91..181 and unlabeled 255 -> 0; names containing "TrainIds" are skipped.
instances: non-crowd annotations painted in list order (later wins); crowd regions stay 0.
Re-running skips finished files."""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    cli.add_root_argument(parser)
    parser.add_argument(
        "--source", choices=("stuffthingmaps", "instances"), default="stuffthingmaps"
    )
    parser.add_argument(
        "--splits", nargs="+", default=["val2017"], help="default: val2017 (the evaluated split)"
    )
    parser.add_argument(
        "--instances-dir",
        help="folder with instances_<split>.json (default: ROOT/coco_stuff164k/annotations)",
    )
    args = parser.parse_args(argv)

    coco_stuff_root = os.path.join(args.root, "coco_stuff164k")
    instances_dir = args.instances_dir or os.path.join(coco_stuff_root, "annotations")
    for split in args.splits:
        if args.source == "stuffthingmaps":
            summary = prepare_from_stuffthingmaps(coco_stuff_root, split, workers=args.workers)
        else:
            instances_json = os.path.join(instances_dir, f"instances_{split}.json")
            summary = prepare_from_instances(
                coco_stuff_root, split, instances_json, workers=args.workers
            )
        output_dir = os.path.join(coco_stuff_root, "annotations", split)
        cli.report(summary, f"COCO-Object {split}", output_dir)
        image_dir = os.path.join(coco_stuff_root, "images", split)
        if not os.path.isdir(image_dir):
            print(f"warning: {image_dir} is missing; the dataset reads its images from there.")
            print(IMAGES_HINT)
            continue
        unlabeled = images_without_labels(coco_stuff_root, split)
        if unlabeled:
            print(
                f"warning: {len(unlabeled)} images of images/{split} have no label PNG, "
                f"e.g. {unlabeled[0]}"
            )


if __name__ == "__main__":
    cli.run(main)
