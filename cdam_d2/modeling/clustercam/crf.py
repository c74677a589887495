"""Dense-CRF post-processing (spec §3.3) with pydensecrf, optionally in a pool of worker processes."""
import multiprocessing
import os
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["CRFParams", "dense_crf", "DenseCRFPostProcessor"]


@dataclass(frozen=True)
class CRFParams:
    """Release values: 10 iterations, Gaussian sxy 4 / compat 3, bilateral sxy 83 / srgb 5 / compat 3."""

    num_iters: int = 10
    gaussian_sxy: float = 4.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 83.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 3.0


def dense_crf(image, probs, params=CRFParams()):
    """
    Args:
        image: (H, W, 3) uint8 RGB.
        probs: (C, H, W) float scores in [0, 1] (need not sum to 1; the unary is -log(clip(p, 1e-5, 1))).

    Returns:
        (C, H, W) float32 mean-field marginals Q.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise ImportError("CRF post-processing needs pydensecrf (pip install pydensecrf2), or set "
                          "MODEL.CLUSTERCAM.TEST.CRF.ENABLED False") from exc
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


def _dense_crf_job(job):
    image, probs, params = job
    return dense_crf(image, probs, CRFParams(**params))


def default_num_workers():
    """All cores available to this process, shared among the processes of a distributed run."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    world_size = 1
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            world_size = dist.get_world_size()
    except ImportError:
        pass
    return max(1, cores // world_size)


class DenseCRFPostProcessor:
    """Runs ``dense_crf`` over a batch of images, in parallel over ``num_workers`` processes.

    ``num_workers`` 0 means all available cores (divided among distributed ranks); 1 runs in the
    calling process. The pool ("spawn", so it is safe next to torch threads) starts on first use.
    """

    def __init__(self, params=CRFParams(), num_workers=0):
        self.params = params
        self.num_workers = num_workers if num_workers > 0 else default_num_workers()
        self._pool = None

    def __call__(self, images, probs):
        """images: list of (H, W, 3) uint8; probs: list of (C, H, W) float32 -> list of (C, H, W) Q."""
        jobs = [(image, prob, asdict(self.params)) for image, prob in zip(images, probs)]
        if self.num_workers == 1 or len(jobs) <= 1:
            return [_dense_crf_job(job) for job in jobs]
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(self.num_workers)
        return self._pool.map(_dense_crf_job, jobs)

    def close(self):
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __getstate__(self):
        # The pool cannot be pickled or deep-copied; a copy starts its own on demand.
        state = dict(self.__dict__)
        state["_pool"] = None
        return state
