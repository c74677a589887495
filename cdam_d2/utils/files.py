"""Atomic, resumable file writing and input checks shared by the preparation tools."""
import json
import os
import re
import secrets
import socket

import numpy as np
from PIL import Image

# Temporary outputs are hidden files ".<name>.<host>.<pid>.<token>.tmp": they never match an output
# name or an input glob such as "*.png", so an interrupted write is never mistaken for a finished
# file, and host + pid tell whether the writer may still be running (see remove_stale_temp_files).
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
# Temp files this process is writing right now (never stale, although their pid is alive).
_IN_FLIGHT = set()


def temp_path_for(path):
    """A fresh temporary file name next to ``path`` (same directory, so ``os.replace`` is atomic),
    unique per host, process and call, so concurrent writers never share or delete each other's."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_atomically(path, write):
    """Call ``write(temp_path)``, then move the result to ``path``; never leaves a partial file."""
    temp_path = temp_path_for(path)
    _IN_FLIGHT.add(temp_path)
    try:
        write(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
    finally:
        _IN_FLIGHT.discard(temp_path)


def _process_is_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def is_stale_temp_file(path):
    """Whether ``path`` is a temporary file whose writer provably stopped: written on this host by
    a process that is gone, or by this process but not being written now. Temp files of other
    hosts (a shared file system) and of live processes are never stale."""
    match = _TEMP_NAME.match(os.path.basename(path))
    if match is None or match["host"] != _HOST:
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return path not in _IN_FLIGHT
    return not _process_is_alive(pid)


def is_complete_file(path, size=None, mode=None):
    """Whether ``path`` is a finished output that a resumed run may skip.

    Images (any extension PIL knows, e.g. ``.png``) must decode completely — a truncated or
    damaged file raises in ``Image.load`` — and have ``size`` = (H, W) and PIL ``mode`` (e.g.
    "L", "P") when they are given; ``.json``
    files must parse. Other files only need to exist. Costs one decode, far less than producing
    the file again.
    """
    if not os.path.isfile(path):
        return False
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json":
        try:
            with open(path) as f:
                json.load(f)
        except (ValueError, UnicodeDecodeError):
            return False
        return True
    if extension in Image.registered_extensions():
        try:
            with Image.open(path) as image:
                image.load()
                return ((size is None or (image.height, image.width) == tuple(size))
                        and (mode is None or image.mode == mode))
        except Exception:  # PIL reports damage as OSError, SyntaxError, struct.error, ...
            return False
    return True


def save_label_png(label, path, palette=None):
    """Write a label map as an 8-bit PNG, atomically: single-channel, or with ``palette`` a palette
    PNG of the same indices (as VOC's ``SegmentationClass``).

    Args:
        label (np.ndarray): uint8 array of shape (H, W) holding class indices.
        path (str): destination ``.png``.
        palette (list[int] or bytes or None): 768 RGB entries for a palette (``P``) PNG.
    """
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(
            f"Label map for {path} must be a uint8 (H, W) array, got {label.dtype} {label.shape}."
        )
    image = Image.fromarray(label)
    if palette is not None:
        image = image.convert("P")  # same indices (uint8 -> "L" -> "P"), then the colours
        image.putpalette(palette)
    write_atomically(path, lambda temp_path: image.save(temp_path, format="PNG"))


def save_json(obj, path, indent=None, sort_keys=True):
    """Write ``obj`` as JSON (``json.dump``'s ``indent`` and ``sort_keys``, then a newline) atomically,
    creating the file's folder."""

    def write(temp_path):
        with open(temp_path, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=sort_keys)
            f.write("\n")

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, write)


def save_lines(lines, path):
    """Write one entry per line (with a trailing newline) atomically, creating the file's folder."""

    def write(temp_path):
        with open(temp_path, "w") as f:
            f.writelines(f"{line}\n" for line in lines)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, write)


def read_id_list(path):
    """Ids from a split file: the first whitespace-separated token of every non-empty line."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def remove_stale_temp_files(directory):
    """Delete the temporary files in ``directory`` that interrupted runs left behind (see
    :func:`is_stale_temp_file`; those of writers still running are kept); returns how many."""
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if is_stale_temp_file(path):
            try:
                os.remove(path)
                removed += 1
            except FileNotFoundError:  # another run cleaned it first
                pass
    return removed


def prepare_output_dir(directory):
    """Create ``directory`` if needed and clear temporary files of interrupted earlier runs."""
    os.makedirs(directory, exist_ok=True)
    remove_stale_temp_files(directory)


def require_path(path, what, how_to_get):
    """Raise a ``FileNotFoundError`` naming ``path`` and how to obtain it when it does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Missing {what}: {path}\n{how_to_get}")
    return path
