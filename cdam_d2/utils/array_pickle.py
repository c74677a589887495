"""Unpickling numpy arrays without running code from the file.

A pickle can name any importable callable and have it called while it loads. :class:`ArrayUnpickler`
resolves only the names that pickles of numpy arrays, dtypes and scalars refer to (numpy 1 and 2
module names, protocol-2 byte strings through ``_codecs.encode``, ``OrderedDict`` containers) and
refuses every other one, so containers, numbers, strings and arrays load and nothing else runs.
"""
import pickle

__all__ = ["ARRAY_GLOBALS", "ArrayUnpickler", "ForbiddenGlobal"]

ARRAY_GLOBALS = frozenset(
    [(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
     for name in ("_reconstruct", "scalar")]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode")]
)


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names a global that is not among :data:`ARRAY_GLOBALS`; ``name`` is "module.name"."""

    def __init__(self, name):
        super().__init__(f"refers to {name}, which a pickle of numpy arrays never needs")
        self.name = name


class ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings, numbers and numpy arrays; raises :class:`ForbiddenGlobal` on any
    other global."""

    def find_class(self, module, name):
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise ForbiddenGlobal(f"{module}.{name}")
