"""Dense-CRF post-processing of the fused test probabilities (the release's VOC protocol), in the calling process or
in a pool of light worker processes.

The pool belongs to whoever opens it (an evaluation, see ``ClusterCAM.evaluation_context``): it is
a context manager whose workers all end when it closes. Each worker is ``crf_worker.py`` run as a
script, so it imports numpy and pydensecrf only. A worker that dies makes the pending call raise
``CRFWorkerError`` at once, naming the worker and the image.
"""
import logging
import os
import signal
import socket
import subprocess
import sys
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait

from .crf_worker import CRFParams, dense_crf

__all__ = ["CRFParams", "dense_crf", "CRFWorkerError", "CRFWorkerPool", "DenseCRFPostProcessor"]

logger = logging.getLogger(__name__)

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crf_worker.py")


class CRFWorkerError(RuntimeError):
    """A dense-CRF worker process died or the pool was used after it broke."""


class _Worker:
    def __init__(self):
        parent_end, child_end = socket.socketpair()
        # -P: the script's folder (this package) is not put on the worker's import path.
        command = [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), WORKER_SCRIPT,
                   str(child_end.fileno())]
        try:
            self.process = subprocess.Popen(command, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            child_end.close()
        self.connection = Connection(parent_end.detach())

    @property
    def pid(self):
        return self.process.pid

    def death_notice(self, task):
        """Message for a worker whose connection broke while it was running ``task``."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            how = "closed its connection"
        elif code < 0:
            how = f"was killed by signal {-code} ({signal.strsignal(-code)})"
        else:
            how = f"exited with code {code}"
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if code == -signal.SIGKILL else ""
        return (f"dense-CRF worker process {self.pid} {how}{hint} before finishing the CRF of {task}. The "
                "evaluation stops: its results would be incomplete. Lower MODEL.CLUSTERCAM.TEST.IMS_PER_BATCH "
                "or MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS if memory is short.")

    def stop(self, kill=False, timeout=5.0):
        """End the worker: an idle one returns when its connection closes; ``kill`` ends a busy one."""
        self.connection.close()
        if kill:
            self.process.kill()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _stop_all(workers, kill=False):
    for worker in workers:
        worker.stop(kill)
    workers.clear()


class CRFWorkerPool:
    """``num_workers`` processes running ``dense_crf``; started on first use, ended by ``close()``.

    Use as a context manager::

        with CRFWorkerPool(4) as pool:
            marginals = pool.map(images, probs, CRFParams())
    """

    def __init__(self, num_workers):
        if num_workers < 1:
            raise ValueError(f"CRFWorkerPool needs at least one worker, got {num_workers}")
        self.num_workers = num_workers
        self._workers = []
        self._broken = None
        self._closed = False
        # Ends the workers even if the owner forgets to close the pool.
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def pids(self):
        return [worker.pid for worker in self._workers]

    def _start(self):
        if self._broken:
            raise CRFWorkerError(f"the dense-CRF worker pool broke earlier: {self._broken}")
        if self._closed:
            raise CRFWorkerError("the dense-CRF worker pool is closed")
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker())
        logger.debug("dense-CRF pool: workers %s", self.pids())

    def _request(self, requests, names):
        """Send each request to an idle worker, return the replies in order."""
        self._start()
        replies = [None] * len(requests)
        pending = deque(range(len(requests)))
        idle = list(self._workers)
        busy = {}  # connection -> (worker, request index)
        try:
            while pending or busy:
                while pending and idle:
                    worker, index = idle.pop(), pending.popleft()
                    try:
                        worker.connection.send(requests[index])
                    except OSError:
                        raise CRFWorkerError(worker.death_notice(names[index])) from None
                    busy[worker.connection] = (worker, index)
                for connection in wait(list(busy)):
                    worker, index = busy.pop(connection)
                    try:
                        status, value = connection.recv()
                    except (EOFError, OSError):
                        raise CRFWorkerError(worker.death_notice(names[index])) from None
                    if status == "error":
                        value.args = (f"{value} (dense CRF of {names[index]})",)
                        raise value
                    replies[index] = value
                    idle.append(worker)
        except BaseException as exc:
            # Other workers may still be busy on this call: their results are not wanted, and a
            # pool with replies in flight cannot be reused.
            self._broken = str(exc) if isinstance(exc, CRFWorkerError) else "an earlier call failed"
            self._closed = True
            _stop_all(self._workers, kill=True)
            raise
        return replies

    def map(self, images, probs, params=CRFParams(), names=None):
        """images: list of (H, W, 3) uint8; probs: list of (C, H, W) float32 -> list of (C, H, W) Q.

        ``names`` (e.g. file names) label the images in error messages.
        """
        names = names or [f"image {i} of the batch" for i in range(len(images))]
        values = params.as_tuple()
        return self._request([("crf", image, prob, values) for image, prob in zip(images, probs)], names)

    def loaded_modules(self):
        """Modules loaded in each worker (a list per worker)."""
        self._start()
        replies = []
        for worker in self._workers:
            worker.connection.send(("modules",))
            status, value = worker.connection.recv()
            replies.append(value)
        return replies

    def close(self):
        self._closed = True
        _stop_all(self._workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class DenseCRFPostProcessor:
    """Runs ``dense_crf`` over the images of a batch: in ``pool`` if given, else in this process."""

    def __init__(self, params=CRFParams(), pool=None):
        self.params = params
        self.pool = pool

    def __call__(self, images, probs, names=None):
        """images: list of (H, W, 3) uint8; probs: list of (C, H, W) float32 -> list of (C, H, W) Q."""
        if self.pool is not None and len(images) > 1:
            return self.pool.map(images, probs, self.params, names)
        return [dense_crf(image, prob, self.params) for image, prob in zip(images, probs)]
