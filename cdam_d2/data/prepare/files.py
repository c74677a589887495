"""Atomic, resumable file writing and input checks shared by the preparation tools."""
import json
import os
import re

import numpy as np
from PIL import Image

# Temporary outputs are hidden files ending in ".<pid>.tmp": they never match an output name or an
# input glob such as "*.png", so an interrupted write is never mistaken for a finished file.
_TEMP_NAME = re.compile(r"^\..+\.\d+\.tmp$")


def temp_path_for(path):
    """Temporary file name next to ``path`` (same directory, so ``os.replace`` is atomic)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}.tmp")


def write_atomically(path, write):
    """Call ``write(temp_path)``, then move the result to ``path``; never leaves a partial file."""
    temp_path = temp_path_for(path)
    try:
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def save_label_png(label, path):
    """Write a label map as a single-channel 8-bit PNG.

    Args:
        label (np.ndarray): uint8 array of shape (H, W) holding class indices.
        path (str): destination ``.png``.
    """
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(
            f"Label map for {path} must be a uint8 (H, W) array, got {label.dtype} {label.shape}."
        )
    write_atomically(path, lambda temp_path: Image.fromarray(label).save(temp_path, format="PNG"))


def save_json(obj, path):
    """Write ``obj`` as JSON (sorted keys) atomically."""

    def write(temp_path):
        with open(temp_path, "w") as f:
            json.dump(obj, f, sort_keys=True)
            f.write("\n")

    write_atomically(path, write)


def save_lines(lines, path):
    """Write one entry per line (with a trailing newline) atomically."""

    def write(temp_path):
        with open(temp_path, "w") as f:
            f.writelines(f"{line}\n" for line in lines)

    write_atomically(path, write)


def read_id_list(path):
    """Ids from a split file: the first whitespace-separated token of every non-empty line."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def remove_stale_temp_files(directory):
    """Delete temporary files left in ``directory`` by an interrupted run; returns how many."""
    if not os.path.isdir(directory):
        return 0
    stale = [name for name in os.listdir(directory) if _TEMP_NAME.match(name)]
    for name in stale:
        os.remove(os.path.join(directory, name))
    return len(stale)


def prepare_output_dir(directory):
    """Create ``directory`` if needed and clear temporary files of an interrupted earlier run."""
    os.makedirs(directory, exist_ok=True)
    remove_stale_temp_files(directory)


def require_path(path, what, how_to_get):
    """Raise a ``FileNotFoundError`` naming ``path`` and how to obtain it when it does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Missing {what}: {path}\n{how_to_get}")
    return path
