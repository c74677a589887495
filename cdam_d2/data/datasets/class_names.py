"""Which CDAM class-name file belongs to a dataset, without touching other projects' metadata.

A ``cdam_*`` dataset names its file in its metadata (``class_names_file``). Detectron2's builtin
datasets (ADE20K, Cityscapes, ...) cannot carry our keys (metadata must not be mutated), so their
files are listed here by dataset name.
"""
from typing import Optional

# Detectron2 builtin dataset name -> package name file (cdam_d2/data/class_names/). The files are
# the training-free peers' (SCLIP / NACLIP) names, in the order of the builtin's stuff_classes.
BUILTIN_CLASS_NAMES_FILES = {
    **{f"ade20k_sem_seg_{split}": "ade20k150.txt" for split in ("train", "val")},
    **{f"cityscapes_fine_sem_seg_{split}": "cityscapes19.txt" for split in ("train", "val", "test")},
}


def class_names_file_for(dataset_name: str) -> Optional[str]:
    """The class-name file of ``dataset_name``: its metadata's ``class_names_file``, else the file
    this package ships for that Detectron2 builtin dataset, else None (callers then fall back to the
    metadata's ``stuff_classes``)."""
    from detectron2.data import MetadataCatalog

    names_file = MetadataCatalog.get(dataset_name).get("class_names_file", None)
    return names_file or BUILTIN_CLASS_NAMES_FILES.get(dataset_name)
