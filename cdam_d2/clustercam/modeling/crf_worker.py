"""Dense CRF (the released settings: unary -log of the max-fused probabilities, Gaussian and bilateral pairwise
terms, 10 mean-field iterations) and the worker process that runs it for ``CRFWorkerPool``.

This file imports only the standard library, numpy and pydensecrf, because ``CRFWorkerPool``
runs it as a script (``python crf_worker.py FD``): the workers then load neither torch nor
Detectron2 (about 30 MB of memory each instead of about 700 MB). Keep it that way: no package imports.
"""
import sys
from dataclasses import astuple, dataclass

import numpy as np

__all__ = ["CRFParams", "dense_crf"]


@dataclass(frozen=True)
class CRFParams:
    """Release values: 10 iterations, Gaussian sxy 4 / compat 3, bilateral sxy 83 / srgb 5 / compat 3."""

    num_iters: int = 10
    gaussian_sxy: float = 4.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 83.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 3.0

    def as_tuple(self):
        """Plain values for a worker (unpickling this class there would import the package)."""
        return astuple(self)


def dense_crf(image, probs, params=CRFParams()):
    """
    Args:
        image: (H, W, 3) uint8 RGB.
        probs: (C, H, W) float scores in [0, 1] (need not sum to 1; the unary is -log(clip(p, 1e-5, 1))).
        params: ``CRFParams`` or the tuple of its values.

    Returns:
        (C, H, W) float32 mean-field marginals Q.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise ImportError("CRF post-processing needs pydensecrf (pip install pydensecrf2), or set "
                          "MODEL.CLUSTERCAM.TEST.CRF.ENABLED False") from exc
    if not isinstance(params, CRFParams):
        params = CRFParams(*params)
    num_labels, height, width = probs.shape
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"CRF image must be uint8 of shape {(height, width, 3)}, got {image.dtype} {image.shape}")
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(num_labels, -1).astype(np.float32)
    crf = dcrf.DenseCRF2D(width, height, num_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.ascontiguousarray(image), compat=params.bilateral_compat)
    marginals = crf.inference(params.num_iters)
    return np.asarray(marginals, dtype=np.float32).reshape(num_labels, height, width)


def serve(connection):
    """Answer requests until the main process closes its end.

    Requests: ``("crf", image, probs, params_tuple)`` -> ``("ok", Q)`` or ``("error", exception)``;
    ``("modules",)`` -> ``("ok", sorted names of the loaded modules)`` (lets tests check the imports).
    """
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        try:
            if request[0] == "modules":
                reply = ("ok", sorted(sys.modules))
            else:
                reply = ("ok", dense_crf(*request[1:]))
        except Exception as exc:  # raised again in the main process, with the image's name
            reply = ("error", exc)
        try:
            connection.send(reply)
        except (BrokenPipeError, OSError):
            return
        except Exception as exc:  # an exception that does not pickle
            connection.send(("error", RuntimeError(repr(exc))))


if __name__ == "__main__":
    import signal
    from multiprocessing.connection import Connection

    # Ctrl-C reaches the whole process group; the main process ends the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(Connection(int(sys.argv[1])))
