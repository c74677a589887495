from .cli import UnsafeConfigError, add_unsafe_config_flag, argument_parser, load_cfg, main, setup
from .trainer import Trainer

__all__ = ["Trainer", "UnsafeConfigError", "add_unsafe_config_flag", "argument_parser", "load_cfg", "main",
           "setup"]
