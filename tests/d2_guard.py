"""Skip guard for tests that need detectron2 (counted and reported once by ``tests/conftest.py``)."""
import importlib.util
import unittest

HAVE_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
SKIP_REASON = "detectron2 is not installed"

requires_detectron2 = unittest.skipUnless(HAVE_DETECTRON2, SKIP_REASON)
