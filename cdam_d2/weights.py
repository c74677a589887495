"""Weights strings and weight files, in one place.

:func:`resolve_weights` says what every weights string of the package is (``MODEL.CDAM.CLIP_WEIGHTS``,
``MODEL.CLUSTERCAM.PRETRAINED``, ``MODEL.WEIGHTS``, the web demo's banner): a local file (``~``
expanded), an upstream tag (an open_clip pretrained tag, a timm model name, a URL that Detectron2
downloads), or ``random`` (no weights read). :func:`read_weights_file` reads a file as data, whatever
its container: a TorchScript archive (TorchScript's own deserializer; its ``state_dict()``), a
``.safetensors`` file, a ``torch.save`` file (``torch.load(weights_only=True)``) or a Detectron2 / Caffe2
model-zoo ``.pkl`` (an unpickler that rebuilds numpy arrays only).

Full pickle, which runs whatever code a file names, is used only when the caller opts in. Every
error names the file, the config key that gave it and what to do. Plain torch and numpy: nothing
here imports Detectron2.
"""
import importlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass

import numpy
import torch

from .utils.array_pickle import ARRAY_GLOBALS, ArrayUnpickler, ForbiddenGlobal

__all__ = ["WeightsError", "WeightsFileError", "PickledWeightsError", "WeightsSource", "load_pickled_arrays", "load_torch_file",
           "read_weights_file", "resolve_weights", "weights_container"]

RANDOM = "random"
# Endings that make a string a file name even without a folder in it.
WEIGHT_FILE_ENDINGS = (".pt", ".pth", ".pkl", ".pyth", ".bin", ".safetensors", ".ckpt")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class WeightsSource:
    """What a weights string names.

    Attributes:
        kind: "file" (a local file), "tag" (an upstream name: open_clip tag, timm model name, or a URL
            such as ``detectron2://...`` or ``https://...``) or "random" (no weights are read: the model
            keeps its own initialisation).
        value: the file's absolute path (``~`` expanded), the tag as given, or "" for random.
        key: the config key (or option) the string came from, for messages.
    """

    kind: str
    value: str
    key: str

    @property
    def is_url(self) -> bool:
        return self.kind == "tag" and _URL.match(self.value) is not None

    def describe(self) -> str:
        if self.kind == "file":
            return f"local file {self.value}"
        if self.kind == "tag":
            return f"{'URL' if self.is_url else 'upstream tag'} {self.value!r}"
        return "random initialisation"


def resolve_weights(weights: str, key: str) -> WeightsSource:
    """The one reading of a weights string.

    - ``""`` or ``"random"``: no weights are read (kind "random");
    - a URL (``scheme://...``): an upstream tag, downloaded by its consumer;
    - an existing file after ``~`` expansion: that file (absolute path);
    - a string that looks like a path (a folder separator, a leading ``~`` or ``.``, or a weight-file
      ending such as ``.pth``) but names no file: ``FileNotFoundError`` naming ``key``;
    - anything else: an upstream tag (an open_clip pretrained tag, a timm model name), checked by its
      consumer.
    """
    text = weights.strip()
    if text in ("", RANDOM):
        return WeightsSource("random", "", key)
    if _URL.match(text):
        return WeightsSource("tag", text, key)
    path = os.path.expanduser(text)
    if os.path.isfile(path):
        return WeightsSource("file", os.path.abspath(path), key)
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if any(sep in text for sep in separators) or text.startswith(("~", ".")) or text.endswith(WEIGHT_FILE_ENDINGS):
        expanded = f" (expanded to {path!r})" if path != text else ""
        raise FileNotFoundError(f"{key}: weights file {text!r}{expanded} does not exist; give an existing file, "
                                f"an upstream tag or {RANDOM!r}")
    return WeightsSource("tag", text, key)

_NO_OPT_IN = "re-save its tensors (e.g. the state dict) with torch.save in an environment you trust"


class WeightsError(RuntimeError):
    """Weights that cannot be read, obtained or fitted to the model; the message names the config key they
    came from and what to do."""


class WeightsFileError(WeightsError):
    """A weight file that cannot be read: truncated, damaged or not a weight file."""


class PickledWeightsError(WeightsFileError):
    """A weight file that only full pickle could read, refused because nobody opted in."""


def _damaged(path, key, error, what_to_do):
    detail = (str(error).strip().splitlines() or ["unexpected end of file"])[0]
    return WeightsFileError(
        f"Cannot read '{path}', given by {key} ({type(error).__name__}: {detail}). "
        f"It is truncated, damaged or not a weight file: {what_to_do}."
    )


def _needs_pickle(path, key, names, opt_in):
    return PickledWeightsError(
        f"'{path}', given by {key}, holds Python objects ({', '.join(names)}) that only full pickle can "
        "load, which would run any code the file names; it is refused. If you trust the file, "
        f"{opt_in or _NO_OPT_IN}."
    )


def _unsafe_globals(path):
    """Globals a torch zip checkpoint needs beyond weights_only's allow-list (None if unknown)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) format, damaged file, or an older torch
        return None


def _array_globals(names):
    """``(object, name)`` pairs for ``torch.serialization.safe_globals`` of the numpy objects
    ``names`` ("module.name") refer to, or None unless all of them are array globals."""
    pairs = [tuple(name.rsplit(".", 1)) for name in names]
    if not all(pair in ARRAY_GLOBALS for pair in pairs):
        return None
    objects = [(getattr(importlib.import_module(module), name), f"{module}.{name}") for module, name in pairs]
    # numpy >= 1.25 builds each dtype as an instance of its own class (numpy.dtypes.Float32DType, ...).
    dtype_classes = {type(numpy.dtype(code)) for code in numpy.typecodes["All"] if code != "O"}
    return objects + sorted(dtype_classes - {numpy.dtype}, key=str)


def _load_weights_only(path, key, opt_in, what_to_do, mmap):
    # Only zip-format files can be memory-mapped; legacy torch.save files are read whole.
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise
        refusal = error
    names = _unsafe_globals(path)
    if not names:  # a legacy-format file: torch cannot tell damage from Python objects
        raise WeightsFileError(
            f"'{path}', given by {key}, cannot be read with weights_only=True: it is truncated or "
            f"damaged ({what_to_do}), or it holds Python objects that only full pickle can load (if "
            f"you trust the file, {opt_in or _NO_OPT_IN})."
        ) from refusal
    arrays = _array_globals(names)
    if arrays is not None:
        try:
            with torch.serialization.safe_globals(arrays):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:  # e.g. an object array
            pass
    raise _needs_pickle(path, key, names, opt_in)


def load_torch_file(path, key, *, allow_pickle=False, opt_in=None,
                    what_to_do="download or copy it again", mmap=False):
    """``torch.load(path, map_location="cpu", weights_only=not allow_pickle)`` with clear errors.

    A checkpoint that also holds numpy arrays loads with weights_only=True too, the numpy array
    constructors allowed (as for ``.pkl`` files).

    Args:
        path (str): the file.
        key (str): where it came from, for messages (e.g. ``"MODEL.WEIGHTS"``).
        allow_pickle (bool): load with full pickle (only for files the user trusts).
        opt_in (str): how the user opts in to full pickle, e.g. ``"set KEY True"``.
        what_to_do (str): advice for a damaged file.
        mmap (bool): memory-map the tensors of a zip-format file (legacy files are read whole).
    Raises:
        FileNotFoundError, PickledWeightsError, WeightsFileError
    """
    try:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        return _load_weights_only(path, key, opt_in, what_to_do, mmap)
    except WeightsFileError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"'{path}', given by {key}, does not exist.") from None
    except Exception as error:  # torch reports damage as RuntimeError, EOFError, OSError, ...
        raise _damaged(path, key, error, what_to_do) from error


def load_pickled_arrays(path, key, *, allow_pickle=False, opt_in=None,
                        what_to_do="download or copy it again"):
    """Read a pickle of numpy arrays (a Detectron2 / Caffe2 model-zoo ``.pkl``, Python 2 ones
    included) with an unpickler that can only rebuild containers, numbers, strings and arrays.

    With ``allow_pickle`` the file is read with full pickle. Arguments and errors as in
    :func:`load_torch_file`.
    """
    try:
        with open(path, "rb") as f:
            if allow_pickle:
                return pickle.load(f, encoding="latin1")
            return ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"'{path}', given by {key}, does not exist.") from None
    except ForbiddenGlobal as error:
        raise _needs_pickle(path, key, [error.name], opt_in) from None
    except Exception as error:  # EOFError, UnpicklingError, ... for a truncated file
        raise _damaged(path, key, error, what_to_do) from error


def weights_container(path) -> str:
    """How a weight file is stored: "torchscript" (a zip archive with TorchScript constants),
    "safetensors", "pickled-arrays" (``.pkl``) or "torch" (``torch.save``)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):
                return "torchscript"
    if str(path).endswith(".safetensors"):
        return "safetensors"
    if str(path).endswith(".pkl"):
        return "pickled-arrays"
    return "torch"


def read_weights_file(path, key, *, allow_pickle=False, opt_in=None, what_to_do="download or copy it again",
                      mmap=False):
    """Read a weight file as data, whatever its container (:func:`weights_container`).

    A TorchScript archive gives its ``state_dict()`` (TorchScript's own deserializer: modules and
    tensors, no Python pickle of arbitrary classes); ``.safetensors`` its tensors; ``.pkl`` goes
    through :func:`load_pickled_arrays`; anything else through :func:`load_torch_file` (``mmap``:
    memory-map the tensors of a zip-format ``torch.save`` file, read lazily).

    Returns:
        (content, container): what the file holds and :func:`weights_container`'s answer.
    Raises:
        FileNotFoundError, PickledWeightsError, WeightsFileError
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{path}', given by {key}, does not exist.")
    options = dict(allow_pickle=allow_pickle, opt_in=opt_in, what_to_do=what_to_do)
    try:
        container = weights_container(path)
        if container == "torchscript":
            return torch.jit.load(path, map_location="cpu").state_dict(), container
        if container == "safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu"), container
    except Exception as error:  # TorchScript and safetensors report damage with many types
        raise _damaged(path, key, error, what_to_do) from error
    if container == "pickled-arrays":
        return load_pickled_arrays(path, key, **options), container
    return load_torch_file(path, key, mmap=mmap, **options), container
