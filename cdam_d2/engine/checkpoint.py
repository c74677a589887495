"""A checkpointer that reads weight files as data and refuses to leave model weights silently
uninitialised."""
import os

from detectron2.checkpoint import DetectionCheckpointer

from ..weights import WeightsError, read_weights_file, resolve_weights

PICKLE_OPT_IN = ("set CDAM_D2.ALLOW_PICKLED_WEIGHTS True (e.g. on the command line) to load it with "
                 "full pickle")


class CoveringCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that loads without running code from the file, names a damaged
    file, and raises when a checkpoint misses model weights.

    - The weights string is read by ``cdam_d2.weights.resolve_weights`` (``~`` expanded), the file by
      ``cdam_d2.weights.read_weights_file``: ``.pth`` and other torch files with
      ``torch.load(weights_only=True)`` (Detectron2 uses full pickle), ``.pkl`` model-zoo files (numpy
      arrays, e.g. ImageNet ``R-50.pkl``) with an unpickler that rebuilds arrays only, TorchScript and
      ``.safetensors`` files with their own readers. Files that need full pickle are refused unless
      ``allow_pickled_weights`` (``CDAM_D2.ALLOW_PICKLED_WEIGHTS``) is set.
    - A truncated or damaged file raises an error naming it, the key it came from (``MODEL.WEIGHTS``
      or the last checkpoint of ``OUTPUT_DIR`` when resuming) and what to do.
    - Detectron2 loads non-strictly and only logs missing keys, so an unconverted checkpoint (say
      an official release's ``.pth`` whose keys lack the meta-architecture's prefix) would train or evaluate
      a random model without an error; here missing or misshapen weights raise. Unexpected extra
      keys are still only logged.
    """

    def __init__(self, model, save_dir="", *, allow_pickled_weights=False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.allow_pickled_weights = allow_pickled_weights
        self._source = "MODEL.WEIGHTS"

    @classmethod
    def from_cfg(cls, model, cfg, save_dir="", **kwargs):
        """The checkpointer of ``model`` with the config's pickle opt-in
        (``CDAM_D2.ALLOW_PICKLED_WEIGHTS``), which every reader of ``MODEL.WEIGHTS`` must honour."""
        return cls(model, save_dir, allow_pickled_weights=cfg.CDAM_D2.ALLOW_PICKLED_WEIGHTS, **kwargs)

    def resume_or_load(self, path, *, resume=True):
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        self._source = "the last checkpoint of OUTPUT_DIR"
        try:
            return super().resume_or_load(path, resume=resume)
        finally:
            self._source = "MODEL.WEIGHTS"

    def _what_to_do(self):
        if self._source == "MODEL.WEIGHTS":
            return "download or copy it again, or give an earlier checkpoint of the run"
        last = os.path.join(self.save_dir, "last_checkpoint")
        return (f"write the name of an earlier model_*.pth into {last}, or run without --resume to "
                "start from MODEL.WEIGHTS")

    def load(self, path, *args, **kwargs):
        """Detectron2's ``load`` of a weights string read by ``cdam_d2.weights.resolve_weights``: a file
        (``~`` expanded), a URL Detectron2 downloads, or "" / "random" (nothing loaded)."""
        source = resolve_weights(path or "", self._source)
        if source.kind == "tag" and not source.is_url:
            raise FileNotFoundError(
                f"{self._source} {path!r} is neither a file nor a URL (detectron2://..., https://...); "
                "give a checkpoint file, or leave it empty to keep the model's initialisation")
        return super().load(source.value, *args, **kwargs)

    def _read(self, filename):
        content, _ = read_weights_file(filename, self._source, allow_pickle=self.allow_pickled_weights,
                                       opt_in=PICKLE_OPT_IN, what_to_do=self._what_to_do())
        return content

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            return _model_zoo_checkpoint(self._read(filename))
        if filename.endswith(".pyth"):
            return _pycls_checkpoint(self._read(filename), filename)
        return super()._load_file(filename)  # reads through _torch_load

    def _torch_load(self, f):
        return self._read(f)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        problems = []
        if incompatible.missing_keys:
            keys = incompatible.missing_keys
            problems.append(f"{len(keys)} model weights are missing from it, e.g. {keys[:5]}")
        if incompatible.incorrect_shapes:
            shapes = [f"{k}: {a} vs model {b}" for k, a, b in incompatible.incorrect_shapes[:5]]
            problems.append(f"{len(incompatible.incorrect_shapes)} have the wrong shape, e.g. {shapes}")
        if problems:
            raise WeightsError(
                f"The checkpoint given by {self._source} does not fit the model: " + "; ".join(problems)
                + ". Check MODEL.* shape keys, and convert official checkpoints first (e.g. "
                "tools/convert_*_checkpoint.py)."
            )
        return incompatible


def _model_zoo_checkpoint(data):
    """Detectron2's reading of a ``.pkl``: a Detectron2 model-zoo file is used as it is; a Caffe2 /
    Detectron1 one (``blobs`` for detection models, a flat dict for ImageNet ones) becomes a
    ``model`` dict without momentum buffers, matched to the model by name heuristics."""
    if "model" in data and "__author__" in data:
        return data
    blobs = data.get("blobs", data)
    model = {key: value for key, value in blobs.items() if not key.endswith("_momentum")}
    return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}


def _pycls_checkpoint(data, filename):
    """Detectron2's reading of a pycls ``.pyth`` file (``model_state``, no BN batch counters)."""
    if "model_state" not in data:
        raise ValueError(f"Cannot load .pyth file {filename}; pycls checkpoints must contain 'model_state'.")
    model = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
    return {"model": model, "__author__": "pycls", "matching_heuristics": True}
