"""Detectron2 dataset mappers of both methods (need detectron2)."""
