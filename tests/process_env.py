"""Environment of the tests' subprocesses: this checkout first on the path, the caller's path kept."""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**overrides):
    """``os.environ`` with ``PYTHONPATH`` = this checkout + the caller's ``PYTHONPATH`` (packages may
    come from there, e.g. on the GPU machine), then ``overrides``."""
    python_path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=python_path, **overrides)
