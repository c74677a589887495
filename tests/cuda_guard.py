"""Skip guard for tests that need a CUDA GPU (counted and reported once by ``tests/conftest.py``).

``CDAM_D2_CUDA_DRY_RUN=1`` runs those tests on the CPU instead: a check of their plumbing (config
keys, entry points, shapes), not of CUDA, so API changes that would break them show up on a machine
without a GPU. Tests that cannot run on a CPU at all (Detectron2's ``AMPTrainer`` asserts CUDA) stay
skipped in a dry run.
"""
import os
import unittest

import torch

DRY_RUN = os.environ.get("CDAM_D2_CUDA_DRY_RUN", "") == "1"
HAVE_CUDA = torch.cuda.is_available()
# The device the CUDA tests put their models and tensors on.
DEVICE = "cuda" if HAVE_CUDA and not DRY_RUN else "cpu"
SKIP_REASON = "no CUDA GPU"

requires_cuda = unittest.skipUnless(HAVE_CUDA or DRY_RUN, SKIP_REASON)
requires_real_cuda = unittest.skipUnless(HAVE_CUDA and not DRY_RUN, SKIP_REASON)
