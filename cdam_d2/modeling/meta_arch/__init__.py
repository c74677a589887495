"""The only registry entries of the plugin: ``CDAM`` and ``ClusterCAM`` (needs detectron2)."""
from .cdam import CDAM
from .clustercam import ClusterCAM

__all__ = ["CDAM", "ClusterCAM"]
