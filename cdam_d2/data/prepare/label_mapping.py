"""Value-by-value conversion of label maps between two label encodings.

Every preparation step that only renumbers labels (palette -> index PNGs, VOC21 -> VOC20,
stuffthingmaps -> COCO-Object / COCO-Stuff 171, Cityscapes ids -> train ids, ADE20K 0..150 ->
Detectron2's 0..149 + 255) is a :class:`LabelMapping` applied by :func:`convert_label_pngs`.
A value the mapping does not know raises instead of passing through unchanged, so a file of
another encoding (already converted, a colour rendering, another dataset) is never half-converted.
"""

import os
from typing import Mapping, NamedTuple

import numpy as np
from PIL import Image

from ..label_io import read_label_map
from ...utils.files import prepare_output_dir, save_label_png
from .parallel import write_missing

IGNORE_LABEL = 255


class LabelMapping(NamedTuple):
    """``labels[v]`` is the output label of input value ``v``; ``known[v]`` whether ``v`` may occur.

    Both arrays have shape (N,): inputs lie in [0, N), outputs are uint8.
    """

    labels: np.ndarray
    known: np.ndarray

    @classmethod
    def from_dict(cls, label_of_value: Mapping[int, int]) -> "LabelMapping":
        """A mapping that knows exactly the keys of ``label_of_value`` (0 <= key, label <= 255)."""
        size = max(label_of_value) + 1
        labels = np.zeros(size, dtype=np.uint8)
        known = np.zeros(size, dtype=bool)
        for value, label in label_of_value.items():
            labels[value] = label
            known[value] = True
        return cls(labels, known)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Map an integer (H, W) array to uint8 labels; raises ``ValueError`` listing the values
        that the mapping does not know."""
        values = np.unique(raw)
        unexpected = [
            int(v) for v in values.tolist() if not (0 <= v < len(self.known) and self.known[v])
        ]
        if unexpected:
            raise ValueError(f"values {unexpected} are not in the conversion table")
        return self.labels[raw]


def shift_down_mapping(num_classes: int, keep_ignore: bool = True) -> LabelMapping:
    """``0 -> 255`` (ignored), ``v -> v - 1`` for ``1 <= v <= num_classes``, and ``255 -> 255``
    when ``keep_ignore`` (else 255 is unknown, for encodings that never use it).

    MMSegmentation's ``reduce_zero_label``: VOC20 from VOC21, Context59 from Context60, and
    Detectron2's ADE20K from ADE's 0 = "other" encoding.
    """
    label_of_value = {0: IGNORE_LABEL}
    if keep_ignore:
        label_of_value[IGNORE_LABEL] = IGNORE_LABEL
    label_of_value.update({value: value - 1 for value in range(1, num_classes + 1)})
    return LabelMapping.from_dict(label_of_value)


def _convert_one(task):
    output_path, source_path, mapping = task
    try:
        label = mapping(read_label_map(source_path))
    except ValueError as error:
        raise ValueError(f"{source_path}: {error}") from None
    save_label_png(label, output_path)


def _source_size(task):
    """(H, W) of a task's source label map, from its header: conversions keep the size."""
    with Image.open(task[1]) as source:
        return source.height, source.width


def convert_label_pngs(pairs, mapping: LabelMapping, workers=1, desc=None):
    """Write ``mapping(read_label_map(source))`` to ``output`` for each ``(output, source)`` pair
    whose output does not exist yet (atomically; re-running resumes).

    Returns:
        WriteSummary
    """
    pairs = list(pairs)
    for directory in sorted({os.path.dirname(output) for output, _ in pairs}):
        prepare_output_dir(directory)
    tasks = [(output, source, mapping) for output, source in pairs]
    return write_missing(_convert_one, tasks, workers=workers, desc=desc, size_of=_source_size)


def png_pairs(source_dir, output_dir, output_suffix=".png", source_suffix=".png", exclude=None):
    """``(output, source)`` paths for every ``<name><source_suffix>`` of ``source_dir`` (sorted),
    the output named ``<name><output_suffix>`` in ``output_dir``; hidden files and names
    containing ``exclude`` are skipped."""
    names = sorted(
        name
        for name in os.listdir(source_dir)
        if name.endswith(source_suffix)
        and not name.startswith(".")
        and not (exclude and exclude in name)
    )
    return [
        (
            os.path.join(output_dir, name[: -len(source_suffix)] + output_suffix),
            os.path.join(source_dir, name),
        )
        for name in names
    ]
