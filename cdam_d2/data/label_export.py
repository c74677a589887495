"""Predict a dataset and write one label PNG (or CAM dictionary) per image, resumably (shared by
tools/export_*.py; no detectron2 needed).

Each file is written under a temporary name and renamed (:func:`save_label_png`,
:func:`save_cam_dict`). A re-run skips the images whose file is complete — a PNG that decodes
completely at the image's size and in the expected mode, a CAM dictionary that loads with the
image's classes at its size — and writes the others again, so an interrupted export resumes and a
file damaged afterwards is replaced.
"""
import logging
import os

from tqdm import tqdm

from .cam_io import cam_dict_problem, save_cam_dict
from .datasets.pseudo_labels import label_file_name
from .image_io import oriented_image_size
from ..utils.files import is_complete_file, prepare_output_dir, save_label_png

logger = logging.getLogger("cdam_d2.label_export")


def check_size(record, shape, what="Prediction"):
    """Raise unless ``shape`` is the record's image size."""
    expected = tuple(image_size(record))
    if tuple(shape) != expected:
        raise ValueError(f"{what} for '{record['file_name']}' has size {tuple(shape)}, expected the image "
                         f"size {expected}.")


def image_size(record):
    """(H, W) of a record's image as Detectron2 reads it: ``height``/``width`` when the record has
    them (mapped inputs), else the file's header with its EXIF orientation applied."""
    if "height" in record and "width" in record:
        return record["height"], record["width"]
    return oriented_image_size(record)


class LabelPNGWriter:
    """Writes (H, W) uint8 label maps as ``<output_dir>/<image_id>.png``.

    Args:
        output_dir (str): created if needed; temporary files of an interrupted run are removed.
        palette (list[int] or None): None writes single-channel ``L`` PNGs (what Detectron2's
            ``DatasetMapper`` reads as indices); a 768-entry palette writes palette (``P``) PNGs.
    """

    def __init__(self, output_dir, palette=None):
        self.output_dir = output_dir
        self.palette = palette
        self.mode = "L" if palette is None else "P"
        prepare_output_dir(output_dir)

    def path_for(self, record):
        return os.path.join(self.output_dir, label_file_name(record))

    def is_finished(self, record):
        """Whether the record's PNG exists, decodes completely, and has the image's size and this
        writer's mode. A file that exists but fails is logged (it will be written again)."""
        path = self.path_for(record)
        if not os.path.exists(path):
            return False
        if is_complete_file(path, image_size(record), self.mode):
            return True
        logger.warning("%s is damaged or does not fit its image (size, mode %s); writing it again", path, self.mode)
        return False

    def write(self, record, label):
        """Write ``label`` (uint8 (H, W) array at the image's size) as the record's PNG, atomically."""
        check_size(record, label.shape)
        save_label_png(label, self.path_for(record), self.palette)


class CamDictWriter:
    """Writes CAM dictionaries {foreground class index (0-based): (H, W) float32 map} as
    ``<output_dir>/<image_id>.npy``, the layout of the WSSS releases (``cdam_d2.data.cam_io``).

    ``classes_of(record)`` gives the class indices an image's file must hold (its image-level labels).
    """

    def __init__(self, output_dir, classes_of):
        self.output_dir = output_dir
        self.classes_of = classes_of
        prepare_output_dir(output_dir)

    def path_for(self, record):
        return os.path.join(self.output_dir, label_file_name(record, ".npy"))

    def is_finished(self, record):
        """Whether the record's file loads as a CAM dictionary with its classes at the image's size.
        A file that exists but fails is logged (it will be written again)."""
        path = self.path_for(record)
        if not os.path.exists(path):
            return False
        problem = cam_dict_problem(path, self.classes_of(record), image_size(record))
        if problem is None:
            return True
        logger.warning("%s is damaged or does not fit its image (%s); writing it again", path, problem)
        return False

    def write(self, record, cams):
        """Write ``cams`` (the record's classes, maps at the image's size) atomically."""
        expected = sorted(set(self.classes_of(record)))
        if sorted(cams) != expected:
            raise ValueError(f"CAMs for '{record['file_name']}' hold the classes {sorted(cams)}, expected its "
                             f"image-level labels {expected}.")
        for key, cam in cams.items():
            check_size(record, cam.shape, f"The CAM of class {key}")
        save_cam_dict(cams, self.path_for(record))


def export_label_maps(batches, writer, predict, total, desc):
    """Write the label map of every record in ``batches`` that is not finished yet.

    Args:
        batches (iterable[list[dict]]): records, or mapped model inputs, in groups predicted together.
        writer (LabelPNGWriter or CamDictWriter): where the maps go and what counts as finished.
        predict (callable): list of the group's unfinished records -> list of what ``writer`` writes
            ((H, W) uint8 arrays, or CAM dictionaries).
        total (int): number of records, for the progress bar.
        desc (str): progress bar label.

    Returns:
        (written, skipped) counts.
    """
    written = skipped = 0
    with tqdm(total=total, desc=desc) as progress:
        for batch in batches:
            todo = [record for record in batch if not writer.is_finished(record)]
            skipped += len(batch) - len(todo)
            if todo:
                labels = predict(todo)
                if len(labels) != len(todo):
                    raise ValueError(f"predict returned {len(labels)} label maps for {len(todo)} images")
                for record, label in zip(todo, labels):
                    writer.write(record, label)
                    written += 1
            progress.update(len(batch))
            progress.set_postfix(written=written, skipped=skipped)
    return written, skipped
