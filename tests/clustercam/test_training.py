"""ClusterCAM's training recipe: the in-training evaluation schedule (after every segmentation-phase epoch,
the checkpoints the release's own selection evaluates), the protocol of each evaluation, and the dense-CRF
workers that live exactly as long as an evaluation."""
import os
import tempfile
import unittest

from tests.helpers import (CLUSTERCAM_TOY_CONFIG, CONFIGS, child_pids, requires_detectron2, run_with_deadline, slow,
                           toy_cfg)

VAL_NAME = "cdam_test_clustercam_training_val"


def crf_workers_among(pids):
    workers = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"crf_worker.py" in f.read():
                    workers.append(pid)
        except OSError:
            pass
    return workers


@requires_detectron2
class TestEvaluationSchedule(unittest.TestCase):
    def due_iterations(self, cfg):
        from cdam_d2.clustercam.hooks import EvaluationSchedule

        schedule = EvaluationSchedule.from_cfg(cfg)
        return [n for n in range(1, cfg.SOLVER.MAX_ITER + 1) if schedule.due(n)]

    def test_every_segmentation_epoch_like_the_release(self):
        # VOC: epochs 50..79 of 1175 iterations each, i.e. the release's 30 seg-phase checkpoints.
        voc = self.due_iterations(toy_cfg(os.path.join(CONFIGS, "clustercam_voc.yaml")))
        self.assertEqual(voc, [58750 + 1175 * k for k in range(1, 31)])
        coco = self.due_iterations(toy_cfg(os.path.join(CONFIGS, "clustercam_coco.yaml")))
        self.assertEqual(coco, [547200 + 13680 * k for k in range(1, 21)])

    def test_configurable(self):
        voc = os.path.join(CONFIGS, "clustercam_voc.yaml")
        from_start = self.due_iterations(toy_cfg(voc, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.START_ITER", "0"))
        self.assertEqual(from_start[:2], [1175, 2350])
        self.assertEqual(len(from_start), 80)
        every_ten = self.due_iterations(toy_cfg(voc, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PERIOD_EPOCHS", "10"))
        self.assertEqual(every_ten, [70500, 82250, 94000])  # the last iteration is always evaluated
        in_iterations = self.due_iterations(toy_cfg(voc, "TEST.EVAL_PERIOD", "10000"))
        self.assertEqual(in_iterations, [68750, 78750, 88750, 94000])
        self.assertEqual(self.due_iterations(toy_cfg(voc, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PERIOD_EPOCHS", "0")), [])

    def test_in_training_protocol(self):
        from cdam_d2.clustercam.hooks import in_training_cfg

        cfg = toy_cfg(os.path.join(CONFIGS, "clustercam_voc.yaml"))
        self.assertEqual(tuple(cfg.MODEL.CLUSTERCAM.TEST.SCALES), (0.5, 0.75, 1.0, 1.25, 1.5))
        self.assertTrue(cfg.MODEL.CLUSTERCAM.TEST.CRF.ENABLED)
        in_training = in_training_cfg(cfg)
        self.assertEqual(tuple(in_training.MODEL.CLUSTERCAM.TEST.SCALES), (1.0,))
        self.assertFalse(in_training.MODEL.CLUSTERCAM.TEST.CRF.ENABLED)


class RecordingEvaluator:
    """Wraps an evaluator; notes the model's protocol and this process's CRF workers per batch."""

    def __init__(self, inner, model, on_process=None):
        self.inner, self.model, self.on_process = inner, model, on_process
        self.seen = []

    def reset(self):
        self.inner.reset()

    def process(self, inputs, outputs):
        workers = crf_workers_among(child_pids())
        self.seen.append((self.model.test_scales, self.model.crf is not None, workers))
        if self.on_process is not None:
            self.on_process(workers)
        self.inner.process(inputs, outputs)

    def evaluate(self):
        return self.inner.evaluate()


@requires_detectron2
class TestEvaluationContext(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from cdam_d2.data.datasets.layouts import LAYOUTS
        from cdam_d2.data.datasets.register import register_sem_seg_layout
        from cdam_d2.data.toy import make_toy_datasets

        cls.tmp = tempfile.TemporaryDirectory()
        make_toy_datasets(cls.tmp.name)
        register_sem_seg_layout(LAYOUTS["cdam_voc21_sem_seg_val"], cls.tmp.name, name=VAL_NAME)

    @classmethod
    def tearDownClass(cls):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        DatasetCatalog.remove(VAL_NAME)
        MetadataCatalog.remove(VAL_NAME)
        cls.tmp.cleanup()

    def setUp(self):
        self.children_before = set(child_pids())

    def cfg(self, *opts):
        return toy_cfg(CLUSTERCAM_TOY_CONFIG, "DATASETS.TEST", f"('{VAL_NAME}',)", "OUTPUT_DIR", self.tmp.name,
                    "MODEL.CLUSTERCAM.TEST.IMS_PER_BATCH", "3", *opts)

    def evaluate(self, cfg, model, on_process=None):
        from cdam_d2.engine.trainer import Trainer

        evaluator = RecordingEvaluator(Trainer.build_evaluator(cfg, VAL_NAME), model, on_process)
        results = Trainer.test(cfg, model, evaluators=[evaluator])
        return results, evaluator.seen

    @slow
    def test_trainer_test_owns_the_crf_workers(self):
        import torch
        from detectron2.modeling import build_model

        cfg = self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "2")
        torch.manual_seed(0)
        model = build_model(cfg)
        pooled, seen = self.evaluate(cfg, model)
        self.assertEqual(len(seen), 2)  # 6 images, 3 per batch
        for scales, crf_on, workers in seen:
            self.assertEqual(scales, (0.75, 1.0))
            self.assertTrue(crf_on)
            self.assertEqual(len(workers), 2)
        self.assertEqual(seen[0][2], seen[1][2])  # one pool for the whole evaluation
        self.assertEqual(set(child_pids()) - self.children_before, set())  # none outlives it
        self.assertIsNone(model.crf.pool)  # the model is back to its in-process CRF

        in_process, seen = self.evaluate(self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "1"), model)
        self.assertEqual([workers for _, _, workers in seen], [[], []])
        self.assertEqual(set(pooled["sem_seg"]), set(in_process["sem_seg"]))
        for key, value in pooled["sem_seg"].items():  # NaN for classes absent from the toy labels
            self.assertTrue(value == in_process["sem_seg"][key] or value != value, key)

    @slow
    def test_in_training_protocol_has_no_workers(self):
        from detectron2.modeling import build_model

        from cdam_d2.clustercam.hooks import in_training_cfg

        cfg = self.cfg()
        model = build_model(cfg)
        _, seen = self.evaluate(in_training_cfg(cfg), model)
        self.assertEqual(seen, [((1.0,), False, [])] * 2)
        self.assertEqual((model.test_scales, model.crf is not None), ((0.75, 1.0), True))  # restored

    def test_default_worker_count(self):
        from cdam_d2.utils.cores import available_cores
        from cdam_d2.clustercam.recipe import crf_workers_from_cfg

        self.assertEqual(crf_workers_from_cfg(self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "0",
                                                       "MODEL.CLUSTERCAM.TEST.IMS_PER_BATCH", "1")), 1)
        self.assertEqual(crf_workers_from_cfg(self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "0",
                                                       "MODEL.CLUSTERCAM.TEST.IMS_PER_BATCH", "64")),
                         min(available_cores(), 64))
        self.assertEqual(crf_workers_from_cfg(self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "3")), 3)

    @slow
    def test_killed_worker_ends_the_evaluation_with_an_error(self):
        import signal

        from detectron2.modeling import build_model

        from cdam_d2.clustercam.modeling import CRFWorkerError

        cfg = self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "2")
        model = build_model(cfg)
        killed = []

        def kill_one(workers):  # after the first batch, with the second still to come
            if not killed:
                killed.append(workers[0])
                os.kill(workers[0], signal.SIGKILL)

        error = run_with_deadline(lambda: self.evaluate(cfg, model, kill_one), 120)
        self.assertIsInstance(error, CRFWorkerError)
        self.assertIn(f"dense-CRF worker process {killed[0]} was killed by signal {signal.SIGKILL}", str(error))
        self.assertRegex(str(error), r"before finishing the CRF of .*\.jpg")
        self.assertEqual(set(child_pids()) - self.children_before, set())

    def test_direct_model_use_runs_the_crf_in_process(self):
        import torch
        from detectron2.modeling import build_model

        model = build_model(self.cfg("MODEL.CLUSTERCAM.TEST.CRF.NUM_WORKERS", "2")).eval()
        inputs = [{"image": torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8), "height": 40, "width": 56}
                  for _ in range(3)]
        with torch.no_grad():
            outputs = model(inputs)
        self.assertEqual(len(outputs), 3)
        self.assertEqual(set(child_pids()) - self.children_before, set())


if __name__ == "__main__":
    unittest.main()
