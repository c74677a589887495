from .cli import load_cfg, main, setup
from .trainer import Trainer

__all__ = ["Trainer", "load_cfg", "main", "setup"]
