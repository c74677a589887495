from .cli import UnsafeConfigError, add_unsafe_config_flag, argument_parser, launch, load_cfg, main, setup
from .predictor import SegmentationPrediction, SegmentationPredictor, build_predictor
from .recipe import Recipe, recipe_of
from .trainer import Trainer

__all__ = ["Recipe", "SegmentationPrediction", "SegmentationPredictor", "Trainer", "UnsafeConfigError",
           "add_unsafe_config_flag", "argument_parser", "build_predictor", "launch", "load_cfg", "main",
           "recipe_of", "setup"]
