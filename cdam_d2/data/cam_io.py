"""CAM dictionaries as the WSSS releases store them: ``<image_id>.npy`` holding a pickled dict from
foreground class index (0-based) to an (H, W) float map at the image's size.

Read them with :func:`read_cam_dict`, not ``np.load(allow_pickle=True)``, which would run any code the
pickle names: it unpickles with :class:`cdam_d2.utils.array_pickle.ArrayUnpickler`, which rebuilds numpy
arrays and containers only, and checks that the file is such a dictionary.
"""
import pickle
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
from numpy.lib import format as npy_format

from ..utils.array_pickle import ArrayUnpickler, ForbiddenGlobal
from ..utils.files import write_atomically

__all__ = ["read_cam_dict", "save_cam_dict", "cam_dict_problem"]


def read_cam_dict(path: str) -> Dict[int, np.ndarray]:
    """The {class index: (H, W) float map} dictionary stored in ``path``: a file of
    ``tools/export_pseudo_labels.py --kind cam-npy``, of :func:`save_cam_dict`, or of a WSSS release
    (``np.save(path, dict)``), loaded without running code from it.

    Raises ``ValueError`` naming the file when it is not such a dictionary (a damaged file, a plain
    array, non-integer keys, maps that are not 2-D float arrays, a pickle naming anything but numpy
    arrays and containers).
    """
    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype != np.dtype(object) or shape != ():
                raise ValueError(f"holds a {dtype} array of shape {shape}, not a pickled dictionary")
            cams = ArrayUnpickler(f).load()
    except ForbiddenGlobal as error:
        raise ValueError(f"CAM file '{path}' is refused: its pickle {error}, so loading it could run code. Write "
                         "CAM dictionaries with cdam_d2.data.cam_io.save_cam_dict (or np.save of a dict of "
                         "arrays).") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"CAM file '{path}' cannot be read as a class -> map dictionary: {error}") from error
    if isinstance(cams, np.ndarray) and cams.shape == () and cams.dtype == object:
        cams = cams.item()
    if not isinstance(cams, dict):
        raise ValueError(f"CAM file '{path}' holds a {type(cams).__name__}, not a class -> map dictionary")
    out = {}
    for key, value in cams.items():
        if not isinstance(key, (int, np.integer)) or isinstance(key, bool):
            raise ValueError(f"CAM file '{path}' has the key {key!r}; keys must be class indices (int)")
        if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind != "f":
            raise ValueError(f"CAM file '{path}': the map of class {key} is not a 2-D float array "
                             f"({type(value).__name__} {getattr(value, 'dtype', '')} {getattr(value, 'shape', '')})")
        out[int(key)] = value
    return out


def save_cam_dict(cams: Dict[int, np.ndarray], path: str) -> None:
    """Write ``{class index: (H, W) float32 map}`` as ``np.save`` does, atomically."""
    payload = np.empty((), dtype=object)
    payload[()] = {int(key): np.ascontiguousarray(value, dtype=np.float32) for key, value in cams.items()}

    def write(temporary):
        with open(temporary, "wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, payload, allow_pickle=True)

    write_atomically(path, write)


def cam_dict_problem(path: str, classes: Optional[Iterable[int]] = None,
                     size: Optional[Tuple[int, int]] = None) -> Optional[str]:
    """None when ``path`` is a readable CAM dictionary with exactly the keys ``classes`` and maps of
    ``size`` (each optional), else what is wrong with it."""
    try:
        cams = read_cam_dict(path)
    except ValueError as error:
        return str(error)
    if classes is not None and sorted(cams) != sorted(set(classes)):
        return f"'{path}' holds the classes {sorted(cams)}, expected {sorted(set(classes))}"
    if size is not None:
        for key, value in cams.items():
            if value.shape != tuple(size):
                return f"'{path}': the map of class {key} has size {value.shape}, expected {tuple(size)}"
    return None
