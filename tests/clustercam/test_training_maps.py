"""Pseudo-label quality and the ClusterCAM panel during training (cdam_d2.clustercam.quality): metrics.json of
the toy schedule holds pseudo_label/* and cam_seed/* next to sem_seg/mIoU, TensorBoard gets the panel, and the
numbers equal tools/evaluate_predictions.py's on the exported maps of the same images."""
import glob
import json
import os
import runpy
import tempfile
import unittest

import torch
from PIL import Image

from tests.helpers import CLUSTERCAM_TOY_CONFIG, REPO, RegisteredToyDatasets, requires_detectron2, slow, toy_cfg

DATASET = "cdam_voc21_sem_seg_train_aug"


@requires_detectron2
class MonitorTest(RegisteredToyDatasets, unittest.TestCase):
    def test_scores_equal_the_exported_maps_scored_by_evaluate_predictions(self):
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from detectron2.modeling import build_model

        from cdam_d2.clustercam.quality import TrainingMapsMonitor
        from cdam_d2.data.datasets import spread_subset
        from cdam_d2.evaluation.prediction_folder import GroundTruth, folder_metrics, score_folder

        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PSEUDO_LABEL_IMAGES", "3")
        torch.manual_seed(0)
        model = build_model(cfg)  # in train mode, as the hook finds it
        monitor = TrainingMapsMonitor(cfg)
        scores = monitor.scores(model)
        self.assertTrue(model.training)
        records = DatasetCatalog.get(DATASET)
        subset = [records[i] for i in spread_subset(3, len(records))]
        self.assertEqual(spread_subset(3, len(records)), [0, len(records) // 2, len(records) - 1])
        names = MetadataCatalog.get(DATASET).stuff_classes
        tool = runpy.run_path(os.path.join(REPO, "tools", "export_pseudo_labels.py"))
        with tempfile.TemporaryDirectory() as out:
            torch.save({"model": model.state_dict()}, os.path.join(out, "model.pth"))
            export_cfg = cfg.clone()
            export_cfg.MODEL.WEIGHTS = os.path.join(out, "model.pth")
            DatasetCatalog.register("cdam_test_monitor_subset", lambda: subset)
            self.addCleanup(DatasetCatalog.remove, "cdam_test_monitor_subset")
            items = [GroundTruth(r["image_id"], r["sem_seg_file_name"]) for r in subset]
            for name, kind in (("pseudo_label", "labels"), ("cam_seed", "cam")):
                folder = os.path.join(out, kind)
                tool["export"](export_cfg, "cdam_test_monitor_subset", folder, kind=kind)
                report = folder_metrics(score_folder(items, folder, "png", len(names), 255, workers=1,
                                                     progress=False), names, "release")
                for key in ("mIoU", "FP", "FN"):
                    self.assertAlmostEqual(scores[name][key], report["results"][0][key], places=9, msg=(name, key))
        self.assertTrue(0 <= scores["pseudo_label"]["ignored"] <= 100)

    def test_off_and_bad_keys(self):
        from cdam_d2.clustercam.quality import TrainingMapsMonitor

        off = TrainingMapsMonitor(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PSEUDO_LABEL_IMAGES",
                                          "0", "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PANEL_IMAGE", "-1"))
        self.assertFalse(off.enabled)
        self.assertEqual(off.scores(None), {})
        self.assertIsNone(off.panel(None))
        with self.assertRaisesRegex(ValueError, "PSEUDO_LABEL_IMAGES must be >= 0"):
            TrainingMapsMonitor(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PSEUDO_LABEL_IMAGES",
                                        "-2"))
        with self.assertRaisesRegex(ValueError, "PANEL_IMAGE must be -1 .off. or the index of a training image, got -2"):
            TrainingMapsMonitor(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PANEL_IMAGE", "-2"))
        last = TrainingMapsMonitor(toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PANEL_IMAGE", "15"))
        self.assertEqual(len(last.records()), 16)

    def test_a_panel_image_past_the_training_split_fails_when_the_hooks_are_built(self):
        from cdam_d2.clustercam.hooks import clustercam_hooks

        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PANEL_IMAGE", "16")
        # Before any trainer or hook is used: the check needs only the config and the training split.
        with self.assertRaisesRegex(ValueError, r"MODEL\.CLUSTERCAM\.TEST\.IN_TRAINING\.PANEL_IMAGE 16 is past the "
                                                rf"16 images of '{DATASET}' \(DATASETS\.TRAIN\[0\]\)"):
            clustercam_hooks(cfg, trainer=None, hooks=[])

    def test_the_maps_are_computed_in_eval_mode_and_the_mode_is_restored(self):
        from detectron2.modeling import build_model

        from cdam_d2.clustercam.quality import TrainingMapsMonitor

        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PSEUDO_LABEL_IMAGES", "2")
        torch.manual_seed(0)
        model = build_model(cfg)
        modes = []

        def recording(method):
            def run(*args, **kwargs):
                modes.append((method.__name__, model.training, model.net.training))
                return method(*args, **kwargs)
            return run

        for name in ("class_activation_maps", "refine_pseudo_labels"):
            setattr(model, name, recording(getattr(model, name)))
        for was_training in (True, False):
            modes.clear()
            model.train(was_training)
            TrainingMapsMonitor(cfg).scores(model)
            self.assertEqual(modes, [("class_activation_maps", False, False), ("refine_pseudo_labels", False, False)] * 2)
            self.assertEqual((model.training, model.net.training), (was_training, was_training))


@requires_detectron2
class InvalidLabelsTest(RegisteredToyDatasets, unittest.TestCase):
    """Label values outside [0, C) that are not the ignore label, in the scored training subset."""

    def subset_dataset(self, name, value):
        """A two-image dataset (the first and last of the toy training split, those PSEUDO_LABEL_IMAGES 2 scores)
        whose first label map has ``value`` in a 4x5 block; returns that label map's path."""
        from detectron2.data import DatasetCatalog

        from cdam_d2.data.label_io import read_label_map

        records = DatasetCatalog.get(DATASET)
        subset = [dict(records[0]), dict(records[-1])]
        labels = read_label_map(subset[0]["sem_seg_file_name"])
        labels[2:6, 3:8] = value
        path = os.path.join(self.folder.name, f"{name}.png")
        Image.fromarray(labels).save(path)
        subset[0]["sem_seg_file_name"] = path
        DatasetCatalog.register(name, lambda: subset)
        self.addCleanup(DatasetCatalog.remove, name)
        return path

    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)

    def monitor_scores(self, dataset, model, *opts):
        from cdam_d2.clustercam.quality import TrainingMapsMonitor

        cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "DATASETS.TRAIN", f"('{dataset}',)",
                      "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PSEUDO_LABEL_IMAGES", "2",
                      "MODEL.CLUSTERCAM.TEST.IN_TRAINING.PANEL_IMAGE", "-1", *opts)
        return TrainingMapsMonitor(cfg).scores(model)

    def test_strict_raises_naming_the_file_else_they_count_as_ignored_with_a_warning(self):
        from detectron2.modeling import build_model

        invalid_path = self.subset_dataset("cdam_test_monitor_invalid", 77)
        self.subset_dataset("cdam_test_monitor_ignored", 255)
        torch.manual_seed(0)
        model = build_model(toy_cfg(CLUSTERCAM_TOY_CONFIG))
        with self.assertRaisesRegex(ValueError, rf"Label map '{invalid_path}' has values \[77\] outside \[0, 21\) that "
                                                r"are not the ignore label 255 \(20 pixels\)\..*STRICT False"):
            self.monitor_scores("cdam_test_monitor_invalid", model)
        self.assertTrue(model.training)  # restored after the error
        with self.assertLogs("cdam_d2.clustercam.quality", level="WARNING") as logs:
            lenient = self.monitor_scores("cdam_test_monitor_invalid", model, "CDAM_D2.EVALUATOR.STRICT", "False")
        self.assertIn("20 label pixels of the pseudo-label subset of 'cdam_test_monitor_invalid'", "\n".join(logs.output))
        self.assertEqual(lenient, self.monitor_scores("cdam_test_monitor_ignored", model))


@slow
@requires_detectron2
class ToyScheduleTest(RegisteredToyDatasets, unittest.TestCase):
    def test_metrics_json_and_tensorboard_hold_the_maps_of_each_evaluation(self):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        from cdam_d2.clustercam.hooks import EvaluationSchedule
        from cdam_d2.engine.trainer import Trainer

        with tempfile.TemporaryDirectory() as out:
            cfg = toy_cfg(CLUSTERCAM_TOY_CONFIG, "OUTPUT_DIR", out)
            trainer = Trainer(cfg)
            trainer.resume_or_load(resume=False)
            trainer.train()
            with open(os.path.join(out, "metrics.json")) as f:
                records = [json.loads(line) for line in f if line.strip()]
            evaluations = [r for r in records if "sem_seg/mIoU" in r]
            schedule = EvaluationSchedule.from_cfg(cfg)
            due = [n - 1 for n in range(1, cfg.SOLVER.MAX_ITER + 1) if schedule.due(n)]
            self.assertEqual([r["iteration"] for r in evaluations], due)
            for record in evaluations:
                for key in ("pseudo_label/mIoU", "pseudo_label/FP", "pseudo_label/FN", "pseudo_label/ignored",
                            "cam_seed/mIoU", "cam_seed/FP", "cam_seed/FN"):
                    self.assertIn(key, record)
                    self.assertTrue(0 <= record[key] <= 100, (key, record[key]))
            events = EventAccumulator(glob.glob(os.path.join(out, "events.out.tfevents.*"))[0],
                                      size_guidance={"images": 0})
            events.Reload()
            panels = events.Images("clustercam/panel")
            self.assertEqual([p.step for p in panels], due)
            self.assertGreater(panels[0].width, panels[0].height)  # a 4-column grid


if __name__ == "__main__":
    unittest.main()
