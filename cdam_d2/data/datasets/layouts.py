"""On-disk layouts of the registered datasets, relative to the datasets root.

One table describes every ``cdam_*`` split, so the loader, the registration and the README agree on
where the prepared files live (the toy generator writes the raw downloads that the tools prepare).
"""
from dataclasses import dataclass
from typing import Optional, Tuple

from .builtin_meta import (
    COCO81_CLASSES,
    COCO_STUFF171_CLASSES,
    CONTEXT59_CLASSES,
    CONTEXT60_CLASSES,
    VOC20_CLASSES,
    VOC21_CLASSES,
)


@dataclass(frozen=True)
class SemSegLayout:
    """Where one split's images, label maps, split list and image-level labels live."""

    name: str
    classes: Tuple[str, ...]
    image_dir: str
    label_dir: Optional[str]  # None: the split has no label maps (weakly supervised training)
    split_file: Optional[str]  # None: every image of ``image_dir``, sorted
    class_names_file: str  # CDAM prompt names, package data in cdam_d2/data/class_names/
    prepare_hint: str  # how to create the files, quoted in errors
    image_labels_file: Optional[str] = None  # JSON {id: [label ids 1..K]} for weak supervision
    image_ext: str = ".jpg"
    label_suffix: str = ".png"
    palette_start: int = 0  # stuff_colors = VOC palette entries from here (1: no background)


_VOC_HINT = (
    "download VOC2012, then run `python tools/prepare_voc.py $DETECTRON2_DATASETS` (writes "
    "SegmentationClassRaw and SegmentationClassVOC20 as index PNGs from VOC's palette PNGs)"
)
_VOC_AUG_HINT = (
    "download VOC2012 and SBD's SegmentationClassAug + train_aug.txt, then run "
    "`python tools/prepare_voc.py $DETECTRON2_DATASETS` and "
    "`python tools/prepare_image_labels.py voc $DETECTRON2_DATASETS`"
)
_CONTEXT_HINT = (
    "download VOC2010 and the PASCAL Context trainval .mat labels, then run "
    "`python tools/prepare_pascal_context.py $DETECTRON2_DATASETS`"
)
_COCO14_HINT = (
    "download COCO 2014 images and instances, then run tools/prepare_image_labels.py coco and "
    "tools/prepare_coco14.py"
)

LAYOUTS = {
    layout.name: layout
    for layout in (
        SemSegLayout(
            name="cdam_voc21_sem_seg_val",
            classes=VOC21_CLASSES,
            image_dir="VOCdevkit/VOC2012/JPEGImages",
            label_dir="VOCdevkit/VOC2012/SegmentationClassRaw",
            split_file="VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
            class_names_file="voc21.txt",
            prepare_hint=_VOC_HINT,
        ),
        SemSegLayout(
            name="cdam_voc20_sem_seg_val",
            classes=VOC20_CLASSES,
            image_dir="VOCdevkit/VOC2012/JPEGImages",
            label_dir="VOCdevkit/VOC2012/SegmentationClassVOC20",
            split_file="VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
            class_names_file="voc20.txt",
            prepare_hint=_VOC_HINT,
            palette_start=1,
        ),
        SemSegLayout(
            name="cdam_voc21_sem_seg_train_aug",
            classes=VOC21_CLASSES,
            image_dir="VOCdevkit/VOC2012/JPEGImages",
            label_dir="VOCdevkit/VOC2012/SegmentationClassAug",
            split_file="VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt",
            class_names_file="voc21.txt",
            prepare_hint=_VOC_AUG_HINT,
            image_labels_file="VOCdevkit/VOC2012/image_labels.json",
        ),
        SemSegLayout(
            name="cdam_context60_sem_seg_val",
            classes=CONTEXT60_CLASSES,
            image_dir="VOCdevkit/VOC2010/JPEGImages",
            label_dir="VOCdevkit/VOC2010/SegmentationClassContext",
            split_file="VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt",
            class_names_file="context60.txt",
            prepare_hint=_CONTEXT_HINT,
        ),
        SemSegLayout(
            name="cdam_context59_sem_seg_val",
            classes=CONTEXT59_CLASSES,
            image_dir="VOCdevkit/VOC2010/JPEGImages",
            label_dir="VOCdevkit/VOC2010/SegmentationClassContext59",
            split_file="VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt",
            class_names_file="context59.txt",
            prepare_hint=_CONTEXT_HINT,
            palette_start=1,
        ),
        SemSegLayout(
            name="cdam_coco_object_sem_seg_val",
            classes=COCO81_CLASSES,
            image_dir="coco_stuff164k/images/val2017",
            label_dir="coco_stuff164k/annotations/val2017",
            split_file=None,
            class_names_file="coco_object81.txt",
            prepare_hint="download COCO val2017 images with COCO-Stuff164k labels (or instances), "
            "then run `python tools/prepare_coco_object.py $DETECTRON2_DATASETS`",
            label_suffix="_instanceTrainIds.png",
        ),
        SemSegLayout(
            name="cdam_coco_stuff171_sem_seg_val",
            classes=COCO_STUFF171_CLASSES,
            image_dir="coco_stuff164k/images/val2017",
            label_dir="coco_stuff164k/annotations/val2017",
            split_file=None,
            class_names_file="coco_stuff171.txt",
            prepare_hint="download COCO val2017 images with the COCO-Stuff164k stuffthingmaps, then "
            "run `python tools/prepare_coco_stuff.py $DETECTRON2_DATASETS`",
            label_suffix="_labelTrainIds.png",
        ),
        SemSegLayout(
            name="cdam_coco14_sem_seg_train",
            classes=COCO81_CLASSES,
            image_dir="COCO14/train2014",
            label_dir=None,
            split_file="COCO14/ImageSets/train2014.txt",
            class_names_file="coco_object81.txt",
            prepare_hint=_COCO14_HINT,
            image_labels_file="COCO14/image_labels.json",
        ),
        SemSegLayout(
            name="cdam_coco14_sem_seg_val",
            classes=COCO81_CLASSES,
            image_dir="COCO14/val2014",
            label_dir="COCO14/SegmentationClass/val2014",
            split_file="COCO14/ImageSets/val2014.txt",
            class_names_file="coco_object81.txt",
            prepare_hint=_COCO14_HINT,
        ),
        # Last, so that the toy generator draws every other layout as before.
        SemSegLayout(  # images only: predictions go to the evaluation server (tools/export_voc_test.py)
            name="cdam_voc21_sem_seg_test",
            classes=VOC21_CLASSES,
            image_dir="VOCdevkit/VOC2012/JPEGImages",
            label_dir=None,
            split_file="VOCdevkit/VOC2012/ImageSets/Segmentation/test.txt",
            class_names_file="voc21.txt",
            prepare_hint="download the VOC2012 test images (VOC2012test.tar, from the PASCAL VOC "
            "evaluation server after registering) and unpack it where VOCtrainval was unpacked: it "
            "adds its JPEGs to VOCdevkit/VOC2012/JPEGImages and writes ImageSets/Segmentation/test.txt",
        ),
    )
}
