"""Pseudo-label maps exported by ``tools/export_pseudo_labels.py`` as a semantic segmentation dataset.

A second-stage segmenter (e.g. Detectron2's DeepLab) trains on the images of a weakly labelled split
(``images_from``) with the exported label maps in place of ground truth. The files are single-channel
8-bit index PNGs (mode ``L``), which Detectron2's stock ``DatasetMapper`` reads correctly
(``read_image(path, "L")`` returns the stored indices; palette PNGs would be turned into grey levels).

Building records needs no detectron2; :func:`register_pseudo_label_dataset` does.
"""
import os
from typing import List

from PIL import Image

LABEL_MODE = "L"  # what the export writes and Detectron2's DatasetMapper reads as indices
_SHOWN = 5  # file names quoted in an error


def record_image_id(record: dict) -> str:
    """A record's ``image_id``, else its image file name without extension."""
    return record.get("image_id") or os.path.splitext(os.path.basename(record["file_name"]))[0]


def label_file_name(record: dict, extension: str = ".png") -> str:
    """``<image_id>.png``: the file name of a record's exported label map (or prediction)."""
    return f"{record_image_id(record)}{extension}"


def export_command(images_from: str, label_dir: str) -> str:
    return (f"python tools/export_pseudo_labels.py --config-file <ClusterCAM config> --dataset {images_from} "
            f"--output {label_dir} MODEL.WEIGHTS <ClusterCAM model_final.pth>")


def load_pseudo_label_records(source_records: List[dict], label_dir: str, dataset_name: str,
                              images_from: str) -> List[dict]:
    """The records of ``images_from`` (same order) with ``sem_seg_file_name`` in ``label_dir``.

    Raises ``FileNotFoundError`` naming the missing label maps and the export command when any is
    missing (an export that was interrupted), and ``ValueError`` for label maps that are not
    single-channel 8-bit PNGs (only their headers are read).
    """
    if not os.path.isdir(label_dir):
        raise FileNotFoundError(
            f"Pseudo-label dataset '{dataset_name}': label folder '{label_dir}' does not exist. Write it "
            f"with\n  {export_command(images_from, label_dir)}"
        )
    records, missing = [], []
    for source in source_records:
        record = dict(source, meta=dict(source.get("meta", {}), dataset_name=dataset_name))
        record["sem_seg_file_name"] = os.path.join(label_dir, label_file_name(source))
        if not os.path.isfile(record["sem_seg_file_name"]):
            missing.append(record["sem_seg_file_name"])
        records.append(record)
    if missing:
        raise FileNotFoundError(
            f"Pseudo-label dataset '{dataset_name}': {len(missing)} of the {len(records)} images of "
            f"'{images_from}' have no label map in '{label_dir}' (e.g. {missing[:_SHOWN]}). Finish the "
            f"export (it resumes where it stopped):\n  {export_command(images_from, label_dir)}"
        )
    wrong_mode = []
    for record in records:
        with Image.open(record["sem_seg_file_name"]) as image:  # header only
            if image.mode != LABEL_MODE:
                wrong_mode.append(f"{record['sem_seg_file_name']} (mode {image.mode})")
    if wrong_mode:
        raise ValueError(
            f"Pseudo-label dataset '{dataset_name}': {len(wrong_mode)} label maps in '{label_dir}' are not "
            f"single-channel 8-bit index PNGs (mode 'L'), e.g. {wrong_mode[:_SHOWN]}; Detectron2's "
            "DatasetMapper would read palette or colour PNGs as grey levels, not class indices. Write "
            f"them with\n  {export_command(images_from, label_dir)}"
        )
    return records


def register_pseudo_label_dataset(name: str, label_dir: str,
                                  images_from: str = "cdam_voc21_sem_seg_train_aug") -> None:
    """Register ``name``: the images of the registered dataset ``images_from`` with the label maps
    ``<label_dir>/<image_id>.png``, lazily loaded (files are checked when the dataset is read).

    Metadata is copied from ``images_from`` (``stuff_classes``, ``stuff_colors``, ``ignore_label``,
    ``evaluator_type``, ...), with ``sem_seg_root = label_dir``. Registering the same name again with
    the same folder and source is a no-op, so every process of a launch may call it.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    label_dir = os.path.abspath(os.path.expanduser(label_dir))
    if images_from not in DatasetCatalog.list():
        raise KeyError(f"Pseudo-label dataset '{name}': images_from '{images_from}' is not a registered "
                       "dataset (import cdam_d2 registers the cdam_* names).")
    if name in DatasetCatalog.list():
        existing = MetadataCatalog.get(name)
        if (existing.get("sem_seg_root", None), existing.get("images_from", None)) == (label_dir, images_from):
            return
        raise ValueError(
            f"Dataset '{name}' is already registered (labels '{existing.get('sem_seg_root', None)}', images "
            f"from '{existing.get('images_from', None)}'); choose another name for '{label_dir}'."
        )
    DatasetCatalog.register(
        name,
        lambda: load_pseudo_label_records(DatasetCatalog.get(images_from), label_dir, name, images_from),
    )
    metadata = {k: v for k, v in MetadataCatalog.get(images_from).as_dict().items() if k != "name"}
    metadata.update(sem_seg_root=label_dir, images_from=images_from, evaluator_type="sem_seg")
    MetadataCatalog.get(name).set(**metadata)
