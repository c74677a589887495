"""Second stage: DeepLab trained on exported pseudo-labels with our evaluator (setup, ImageNet initialisation,
resume, learning in-process), and the toy command sequence of docs/CLUSTERCAM.md (ClusterCAM -> export -> DeepLab -> eval)
end to end."""
import contextlib
import json
import os
import re
import tempfile
import unittest

import numpy as np

from tests.helpers import (SECOND_STAGE_TOY_CONFIG, RegisteredToyDatasets, documented_commands, requires_detectron2,
                           run_documented_toy_sequence, slow)


@contextlib.contextmanager
def one_thread():
    """Two torch threads on this shared 2-core machine train ~30x slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@requires_detectron2
class SecondStageTrainingTest(RegisteredToyDatasets, unittest.TestCase):
    """In-process: DeepLab learns the toy segmentation from label maps served as 'pseudo-labels'."""

    def build_cfg(self, opts):
        from cdam_d2.second_stage.config import add_second_stage_config
        from cdam_d2.engine import load_cfg

        output = os.path.join(self._tmp.name, "out")
        cfg, _ = load_cfg(SECOND_STAGE_TOY_CONFIG, ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", output, *opts],
                          add_config=add_second_stage_config)
        return cfg

    def test_setup_requires_the_label_folder_for_training(self):
        from cdam_d2.second_stage.cli import register_pseudo_labels_from_cfg

        cfg = self.build_cfg([])
        with self.assertRaises(ValueError) as caught:
            register_pseudo_labels_from_cfg(cfg)
        self.assertIn("CDAM_D2.PSEUDO_LABELS.DIR", str(caught.exception))
        register_pseudo_labels_from_cfg(cfg, training=False)  # evaluation needs no pseudo-labels

    def test_backbone_weights_must_be_covered_head_may_start_fresh(self):
        import torch
        from detectron2.modeling import build_model

        from cdam_d2.second_stage.recipe import ImageNetInitCheckpointer

        cfg = self.build_cfg([])
        source, target = build_model(cfg), build_model(cfg)
        backbone = {k: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
        path = os.path.join(self._tmp.name, "imagenet.pth")
        torch.save({"model": backbone}, path)
        head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("sem_seg_head.")}
        ImageNetInitCheckpointer(target).load(path)
        for key, value in target.state_dict().items():
            expected = backbone[key] if key in backbone else head_before.get(key)
            if expected is not None:
                torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=key)
        del backbone["backbone.res5.2.conv3.weight"]
        torch.save({"model": backbone}, path)
        with self.assertRaisesRegex(RuntimeError, "res5.2.conv3.weight"):
            ImageNetInitCheckpointer(target).load(path)

    def test_model_zoo_pkl_without_backbone_prefix_loads_by_name_matching(self):
        """The layout of Detectron2's ImageNet files such as DeepLab/R-103.pkl: numpy arrays named as in
        a bare ResNet ('stem.conv1.weight'), matched to 'backbone.*' by Detectron2's heuristics."""
        import pickle

        import torch
        from detectron2.modeling import build_model

        from cdam_d2.second_stage.recipe import ImageNetInitCheckpointer

        cfg = self.build_cfg([])
        source, target = build_model(cfg), build_model(cfg)
        arrays = {k[len("backbone."):]: v.numpy() for k, v in source.state_dict().items()
                  if k.startswith("backbone.") and not k.endswith("num_batches_tracked")}
        path = os.path.join(self._tmp.name, "R-tiny.pkl")
        with open(path, "wb") as f:
            pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": True}, f)
        head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("sem_seg_head.")}
        ImageNetInitCheckpointer(target).load(path)
        state = target.state_dict()
        for name, array in arrays.items():
            np.testing.assert_array_equal(state["backbone." + name].numpy(), array, err_msg=name)
        for key, value in head_before.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)

    @slow
    def test_resume_continues_from_the_run_checkpoint(self):
        import torch

        from cdam_d2.second_stage.cli import register_pseudo_labels_from_cfg
        from cdam_d2.second_stage.recipe import SecondStageTrainer

        label_dir = os.path.join(self.root, "VOCdevkit", "VOC2012", "SegmentationClassAug")
        name = "cdam_test_second_stage_resume"
        output = os.path.join(self._tmp.name, "resume")
        os.makedirs(output)
        common = ["CDAM_D2.PSEUDO_LABELS.DIR", label_dir, "CDAM_D2.PSEUDO_LABELS.NAME", name,
                  "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "OUTPUT_DIR", output]
        try:
            cfg = self.build_cfg([*common, "SOLVER.MAX_ITER", "2"])
            register_pseudo_labels_from_cfg(cfg)
            with one_thread():
                first = SecondStageTrainer(cfg)
                first.resume_or_load(resume=True)  # nothing to resume: MODEL.WEIGHTS is empty, random init
                first.train()
                resumed = SecondStageTrainer(self.build_cfg([*common, "SOLVER.MAX_ITER", "3"]))
                resumed.resume_or_load(resume=True)
        finally:
            self.unregister(name)
        self.assertEqual(resumed.start_iter, 2)
        for (key, value), other in zip(first.model.state_dict().items(), resumed.model.state_dict().values()):
            torch.testing.assert_close(other, value, rtol=0, atol=0, msg=key)

    def unregister(self, name):
        from detectron2.data import DatasetCatalog, MetadataCatalog

        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    @slow
    def test_deeplab_learns_from_pseudo_labels_and_is_scored_by_our_evaluator(self):
        from detectron2.utils.env import seed_all_rng

        from cdam_d2.second_stage.cli import register_pseudo_labels_from_cfg
        from cdam_d2.second_stage.recipe import SecondStageTrainer
        from cdam_d2.evaluation.sem_seg_evaluator import SemSegEvaluator

        label_dir = os.path.join(self.root, "VOCdevkit", "VOC2012", "SegmentationClassAug")  # toy truth, mode L
        name = "cdam_test_second_stage_pl"
        try:
            cfg = self.build_cfg(["CDAM_D2.PSEUDO_LABELS.DIR", label_dir, "CDAM_D2.PSEUDO_LABELS.NAME", name,
                                  "DATASETS.TRAIN", f"('{name}',)", "SOLVER.MAX_ITER", "100",
                                  "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.1", "SOLVER.WARMUP_ITERS", "10"])
            cfg.freeze()
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            register_pseudo_labels_from_cfg(cfg)
            self.assertIsInstance(SecondStageTrainer.build_evaluator(cfg, "cdam_voc21_sem_seg_val"), SemSegEvaluator)
            seed_all_rng(0)
            with one_thread():
                trainer = SecondStageTrainer(cfg)
                trainer.resume_or_load(resume=False)
                untrained = SecondStageTrainer.test(cfg, trainer.model)["sem_seg"]["mIoU"]
                trainer.train()
                trained = SecondStageTrainer.test(cfg, trainer.model)["sem_seg"]
            with open(os.path.join(cfg.OUTPUT_DIR, "metrics.json")) as f:
                losses = [json.loads(line)["total_loss"] for line in f if "total_loss" in line]
        finally:
            self.unregister(name)
        # The loss falls (logged every 20 iterations), and on the toy val set (background + 3 shapes)
        # the net scores far above predicting background everywhere (mIoU ~20) and above its start
        # (44-70 over seeds here; 0-21 untrained).
        self.assertLess(losses[-1], 0.6 * losses[0], losses)
        self.assertGreater(trained["mIoU"], 35.0, trained)
        self.assertGreater(trained["mIoU"], untrained + 15.0, (untrained, trained))


@slow
@requires_detectron2
class SecondStageDocumentedSequenceTest(unittest.TestCase):
    def test_documented_toy_sequence_end_to_end(self):
        commands = documented_commands(os.path.join("docs", "CLUSTERCAM.md"), "Second stage: DeepLab on pseudo-labels",
                                       containing="make_toy_datasets.py")
        tools = ["tools/train_net.py", "tools/export_pseudo_labels.py", "tools/train_second_stage.py",
                 "tools/train_second_stage.py"]

        def on_two_processes(command):
            # second-stage training on two processes: each spawned worker must register the pseudo-labels itself
            if "train_second_stage.py" in command and "--eval-only" not in command:
                return command.replace("--config-file", "--num-gpus 2 --dist-url auto --config-file", 1)
            return command

        with tempfile.TemporaryDirectory() as tmp:
            out, finished = run_documented_toy_sequence(self, commands, tmp, tools, rewrite=on_two_processes,
                                                        timeout=600)
            self._check_outputs(out, [done.stdout + done.stderr for done in finished])

    def _check_outputs(self, out, logs):
        import torch

        train_log, eval_log = logs[2], logs[3]
        self.assertEqual(len(os.listdir(os.path.join(out, "pseudo"))), 16)  # every toy train_aug image
        with open(os.path.join(out, "deeplab", "metrics.json")) as f:
            iterations = [json.loads(line) for line in f if "total_loss" in line]
        self.assertEqual(iterations[-1]["iteration"], 3)
        with open(os.path.join(out, "deeplab", "config.yaml")) as f:
            self.assertIn(os.path.join(out, "pseudo"), f.read())  # the run records its pseudo-labels
        # training ends with an evaluation (2 processes); --eval-only repeats it (1 process)
        scores = [re.findall(r"copypaste: ([0-9.]+),", log.split("copypaste: mIoU")[-1])[:1] for log in logs[2:]]
        self.assertTrue(all(scores), train_log[-3000:])
        self.assertAlmostEqual(float(scores[0][0]), float(scores[1][0]), places=3)
        self.assertIn("cdam_d2.evaluation.sem_seg_evaluator", eval_log)  # scored by our evaluator
        result = torch.load(os.path.join(out, "deeplab_eval", "inference", "cdam_voc21_sem_seg_val",
                                          "sem_seg_evaluation.pth"), weights_only=True)
        self.assertAlmostEqual(result["mIoU"], float(scores[1][0]), places=3)


if __name__ == "__main__":
    unittest.main()
