"""Shared helpers of the test suite: the repository root, the environment of subprocesses, skip guards,
the toy configs and the toy datasets, and the ``slow`` marker."""
import os

import pytest

from tests.d2_guard import HAVE_DETECTRON2, requires_detectron2  # noqa: F401
from tests.process_env import REPO, subprocess_env  # noqa: F401
from tests.toy_datasets import RegisteredToyDatasets  # noqa: F401

CONFIGS = os.path.join(REPO, "configs")
CDAM_TOY_CONFIG = os.path.join(CONFIGS, "quick_schedules", "cdam_voc21_toy_eval.yaml")
CLUSTERCAM_TOY_CONFIG = os.path.join(CONFIGS, "quick_schedules", "clustercam_voc_toy.yaml")

# Tests that start a subprocess or run an end-to-end schedule: `pytest -m "not slow"` leaves them out.
slow = pytest.mark.slow


def toy_cfg(config=CDAM_TOY_CONFIG, *opts):
    """A toy config on the CPU (unfrozen), with ``opts`` (KEY VALUE pairs) applied. Needs detectron2."""
    from cdam_d2.engine import load_cfg

    return load_cfg(config, ["MODEL.DEVICE", "cpu", *opts])[0]
