from .cli import UnsafeConfigError, add_unsafe_config_flag, argument_parser, launch, load_cfg, main, setup
from .predictor import CDAMPredictor, ClusterCAMPredictor, SegmentationPrediction, build_predictor
from .trainer import Trainer

__all__ = ["CDAMPredictor", "ClusterCAMPredictor", "SegmentationPrediction", "Trainer", "UnsafeConfigError",
           "add_unsafe_config_flag", "argument_parser", "build_predictor", "launch", "load_cfg", "main", "setup"]
