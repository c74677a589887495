"""A checkpointer that refuses to leave model weights silently uninitialised."""
from detectron2.checkpoint import DetectionCheckpointer


class CoveringCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that raises when a checkpoint misses model weights.

    Detectron2 loads non-strictly and only logs missing keys, so an unconverted checkpoint (say
    an official ClusterCAM ``.pth`` whose keys lack the ``net.`` prefix) would train or evaluate a
    random model without an error. Unexpected extra keys are still only logged.
    """

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
            raise RuntimeError(
                "The checkpoint given by MODEL.WEIGHTS does not fit the model: " + "; ".join(problems)
                + ". Check MODEL.* shape keys, and convert official checkpoints first (e.g. "
                "tools/convert_clustercam_checkpoint.py)."
            )
        return incompatible
