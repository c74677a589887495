"""CDAM's recipe for the Trainer and the predictor: a test loader that applies the released resize,
text encoded before an evaluation starts, and training refused (CDAM is training-free)."""
import contextlib

from detectron2.data import build_detection_test_loader

from ..engine.recipe import Recipe
from .mapper import CDAMTestMapper
from .predictor import CDAMPredictor

__all__ = ["CDAMRecipe", "TRAINING_FREE"]

TRAINING_FREE = ("CDAM is training-free: there is nothing to train. Evaluate with "
                 "`tools/train_net.py --config-file <cdam config> --eval-only`.")


class CDAMRecipe(Recipe):
    predictor = CDAMPredictor

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # The mapper stamps every record with the loader's dataset (Detectron2's builtin loaders set no `meta`).
        return build_detection_test_loader(cfg, dataset_name, mapper=CDAMTestMapper(cfg, dataset_name=dataset_name))

    @classmethod
    @contextlib.contextmanager
    def evaluation_context(cls, cfg, model):
        """Encode the text of every DATASETS.TEST entry before inference, so encoding neither runs inside
        the first batch nor pollutes Detectron2's ETA."""
        model.encode_datasets(cfg.DATASETS.TEST)
        yield

    @classmethod
    def build_optimizer(cls, cfg, model):
        raise ValueError(TRAINING_FREE)

    @classmethod
    def build_train_loader(cls, cfg):
        raise ValueError(TRAINING_FREE)
