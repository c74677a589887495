#!/usr/bin/env python
"""Write image-level labels (JSON {id: [sorted segmentation ids]}) for VOC 2012 or COCO 2014."""
import os

from cdam_d2.data.prepare import cli
from cdam_d2.data.prepare.coco14 import write_coco14_image_labels
from cdam_d2.utils.files import remove_stale_temp_files, save_json
from cdam_d2.data.prepare.voc_labels import voc_image_labels

LAYOUT = """voc: expected layout under ROOT:
  VOCdevkit/VOC2012/Annotations/<id>.xml                      VOCtrainval_11-May-2012.tar
  VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt            same archive
  VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt      SBD augmentation (10,582 ids)
  VOCdevkit/VOC2012/SegmentationClassAug/<id>.png             only with --from-masks
writes VOCdevkit/VOC2012/image_labels.json for train_aug ∪ val: every <name> tag that is one of
the 20 VOC classes (difficult objects included, part names ignored) -> ids 1..20 (alphabetical).

coco: expected layout:
  <instances dir>/instances_{train2014,val2014}.json   annotations_trainval2014.zip
                                                        (default dir: ROOT/COCO14/annotations)
writes under ROOT/COCO14/:
  image_labels.json                  {name: labels}, category ids sorted -> 1..80, crowd included
  ImageSets/{train2014,val2014}.txt  sorted names of images with >= 1 instance annotation"""


def main(argv=None):
    parser = cli.make_parser(__doc__, LAYOUT)
    parser.add_argument("dataset", choices=("voc", "coco"))
    cli.add_root_argument(parser)
    parser.add_argument(
        "--from-masks",
        action="store_true",
        help="voc: derive labels from SegmentationClassAug instead of the XML (not faithful)",
    )
    parser.add_argument("--instances-dir", help="coco: folder with instances_*2014.json")
    args = parser.parse_intermixed_args(argv)  # "voc --workers 4 ROOT" works too

    if args.dataset == "voc":
        voc_root = os.path.join(args.root, "VOCdevkit", "VOC2012")
        labels = voc_image_labels(voc_root, from_masks=args.from_masks, workers=args.workers)
        output_path = os.path.join(voc_root, "image_labels.json")
        remove_stale_temp_files(voc_root)
        save_json(labels, output_path)
    else:
        coco14_root = os.path.join(args.root, "COCO14")
        instances_dir = args.instances_dir or os.path.join(coco14_root, "annotations")
        labels, names_of_split = write_coco14_image_labels(coco14_root, instances_dir)
        for split, names in names_of_split.items():
            print(f"COCO14 {split}: {len(names)} annotated images")
        output_path = os.path.join(coco14_root, "image_labels.json")
    unlabeled = sum(1 for image_labels in labels.values() if not image_labels)
    print(f"wrote labels of {len(labels)} images ({unlabeled} without any label) -> {output_path}")


if __name__ == "__main__":
    cli.run(main)
