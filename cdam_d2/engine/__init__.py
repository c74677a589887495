from .cli import load_cfg, main, setup
from .predictor import CDAMPredictor, ClusterCAMPredictor, SegmentationPrediction, build_predictor
from .trainer import Trainer

__all__ = ["CDAMPredictor", "ClusterCAMPredictor", "SegmentationPrediction", "Trainer", "build_predictor", "load_cfg",
           "main", "setup"]
