"""The dense CRF (marginals, denoising) and its worker pool: same results as in-process, light workers, no
process left after close, and a worker that dies ends the call with an error naming it instead of a hang."""
import os
import signal
import threading
import unittest

import numpy as np

from cdam_d2.clustercam.modeling import CRFParams, CRFWorkerError, CRFWorkerPool, DenseCRFPostProcessor, dense_crf
from tests.helpers import child_pids, run_with_deadline, slow


def noisy_two_region_case(seed, height=40, width=60):
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, width // 2:] = 1
    image = np.where(truth[..., None] == 1, [200, 40, 40], [40, 40, 200]).astype(np.uint8)
    probs = np.stack([1.0 - truth, truth]).astype(np.float32) * 0.6 + 0.2
    probs += rng.normal(0, 0.25, probs.shape).astype(np.float32)
    return image, np.clip(probs, 0, 1).astype(np.float32), truth


class TestDenseCRF(unittest.TestCase):
    def test_marginals_and_denoising(self):
        image, probs, truth = noisy_two_region_case(0)
        q = dense_crf(image, probs)
        self.assertEqual(q.shape, probs.shape)
        np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
        raw_errors = (probs.argmax(0) != truth).sum()
        crf_errors = (q.argmax(0) != truth).sum()
        self.assertGreater(raw_errors, 20)
        self.assertLess(crf_errors, raw_errors // 4)

    def test_bad_image(self):
        _, probs, _ = noisy_two_region_case(0)
        with self.assertRaisesRegex(ValueError, "uint8"):
            dense_crf(np.zeros((40, 60, 3), dtype=np.float32), probs)


class TestCRFWorkerPool(unittest.TestCase):
    def setUp(self):
        self.children_before = set(child_pids())

    def assert_no_new_children(self):
        self.assertEqual(set(child_pids()) - self.children_before, set())

    @slow
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

    @slow
    def test_workers_load_neither_torch_nor_detectron2(self):
        with CRFWorkerPool(1) as pool:
            pool.map(*[[x] for x in noisy_two_region_case(0)[:2]], CRFParams(num_iters=1))
            (modules,) = pool.loaded_modules()
        self.assertIn("numpy", modules)
        self.assertIn("pydensecrf.densecrf", modules)
        for heavy in ("torch", "detectron2", "cdam_d2", "timm", "cv2"):
            self.assertNotIn(heavy, modules)

    @slow
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

    @slow
    def test_worker_error_names_the_image(self):
        _, probs, _ = noisy_two_region_case(0)
        good = np.zeros((40, 60, 3), dtype=np.uint8)
        bad = np.zeros((40, 61, 3), dtype=np.uint8)
        with CRFWorkerPool(2) as pool:
            with self.assertRaisesRegex(ValueError, r"uint8 of shape \(40, 60, 3\).*dense CRF of b\.jpg"):
                pool.map([good, bad], [probs, probs], CRFParams(num_iters=1), names=["a.jpg", "b.jpg"])
        self.assert_no_new_children()

    @slow
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
