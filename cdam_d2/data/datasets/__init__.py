"""Dataset layouts and readers. Importing this module needs no detectron2; ``register`` does."""
from .builtin_meta import COCO81_CLASSES, CONTEXT60_CLASSES, VOC21_CLASSES, pascal_colormap
from .layouts import LAYOUTS, SemSegLayout
from .loader import default_datasets_root, load_sem_seg_records, spread_subset
from .pseudo_labels import register_pseudo_label_dataset

__all__ = [
    "COCO81_CLASSES",
    "CONTEXT60_CLASSES",
    "LAYOUTS",
    "SemSegLayout",
    "VOC21_CLASSES",
    "default_datasets_root",
    "load_sem_seg_records",
    "pascal_colormap",
    "register_pseudo_label_dataset",
    "spread_subset",
]
