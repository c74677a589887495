"""The dense-CRF worker pool: same results as in-process, light workers, no process left after
close, and a worker that dies ends the call with an error naming it instead of a hang."""
import os
import signal
import threading
import unittest

import numpy as np

from cdam_d2.clustercam.modeling import CRFParams, CRFWorkerError, CRFWorkerPool, DenseCRFPostProcessor, dense_crf
from tests.test_clustercam_inference import noisy_two_region_case


def child_pids(pid=None):
    """Pids of the live (non-zombie) child processes of ``pid`` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry))
    return children


def run_with_deadline(function, seconds):
    """Run ``function`` in a thread; fail (instead of hanging the suite) if it has not returned in time.
    Returns the exception it raised, or None."""
    outcome = {}

    def target():
        try:
            function()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"still running after {seconds} s: the call hangs")
    return outcome.get("error")


class TestCRFWorkerPool(unittest.TestCase):
    def setUp(self):
        self.children_before = set(child_pids())

    def assert_no_new_children(self):
        self.assertEqual(set(child_pids()) - self.children_before, set())

    def test_pool_equals_in_process_and_leaves_nothing(self):
        cases = [noisy_two_region_case(seed) for seed in range(3)]
        images, probs = [c[0] for c in cases], [c[1] for c in cases]
        params = CRFParams(num_iters=3)
        in_process = DenseCRFPostProcessor(params)(images, probs)
        with CRFWorkerPool(2) as pool:
            self.assertEqual(pool.pids(), [])  # started on first use
            pooled = DenseCRFPostProcessor(params, pool)(images, probs)
            workers = pool.pids()
            self.assertEqual(len(workers), 2)
            self.assertTrue(set(workers) <= set(child_pids()))
            again = pool.map(images[:2], probs[:2], params)  # the same workers serve the next batch
            self.assertEqual(pool.pids(), workers)
        self.assert_no_new_children()
        for a, b in zip(in_process, pooled):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(again[1], in_process[1])
        with self.assertRaisesRegex(CRFWorkerError, "closed"):
            pool.map(images, probs, params)

    def test_workers_load_neither_torch_nor_detectron2(self):
        with CRFWorkerPool(1) as pool:
            pool.map(*[[x] for x in noisy_two_region_case(0)[:2]], CRFParams(num_iters=1))
            (modules,) = pool.loaded_modules()
        self.assertIn("numpy", modules)
        self.assertIn("pydensecrf.densecrf", modules)
        for heavy in ("torch", "detectron2", "cdam_d2", "timm", "cv2"):
            self.assertNotIn(heavy, modules)

    def test_killed_worker_raises_an_error_naming_it(self):
        image, probs, _ = noisy_two_region_case(0, height=160, width=200)
        slow = CRFParams(num_iters=400)  # seconds per image, so the kill lands mid-job
        names = [f"img{i}.jpg" for i in range(4)]
        pool = CRFWorkerPool(2)
        pool.map([image, image], [probs, probs], CRFParams(num_iters=1))  # workers up
        victim = pool.pids()[0]
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
        killer.start()
        error = run_with_deadline(lambda: pool.map([image] * 4, [probs] * 4, slow, names), 120)
        killer.join()
        self.assertIsInstance(error, CRFWorkerError)
        self.assertRegex(str(error), rf"worker process {victim} was killed by signal {signal.SIGKILL}")
        self.assertRegex(str(error), r"before finishing the CRF of img[0-3]\.jpg")
        self.assert_no_new_children()  # the busy survivor is ended too
        with self.assertRaisesRegex(CRFWorkerError, "broke earlier"):
            pool.map([image], [probs], slow)
        pool.close()

    def test_worker_error_names_the_image(self):
        _, probs, _ = noisy_two_region_case(0)
        good = np.zeros((40, 60, 3), dtype=np.uint8)
        bad = np.zeros((40, 61, 3), dtype=np.uint8)
        with CRFWorkerPool(2) as pool:
            with self.assertRaisesRegex(ValueError, r"uint8 of shape \(40, 60, 3\).*dense CRF of b\.jpg"):
                pool.map([good, bad], [probs, probs], CRFParams(num_iters=1), names=["a.jpg", "b.jpg"])
        self.assert_no_new_children()

    def test_forgotten_pool_is_ended(self):
        pool = CRFWorkerPool(1)
        pool.map(*[[x] for x in noisy_two_region_case(0)[:2]], CRFParams(num_iters=1))
        self.assertEqual(len(set(child_pids()) - self.children_before), 1)
        del pool
        self.assert_no_new_children()

    def test_in_process_when_no_pool(self):
        image, probs, _ = noisy_two_region_case(1)
        (q,) = DenseCRFPostProcessor(CRFParams(num_iters=2))([image], [probs])
        np.testing.assert_array_equal(q, dense_crf(image, probs, CRFParams(num_iters=2)))
        self.assert_no_new_children()


if __name__ == "__main__":
    unittest.main()
