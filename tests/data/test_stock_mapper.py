"""Every registered split, prepared from its raw download layout by tools/prepare_*.py, reads the true
class indices through Detectron2's stock ``DatasetMapper`` (what other projects train and evaluate
with), and the cdam_d2 Trainer evaluates Detectron2's builtin Cityscapes / ADE20K splits."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.toy import make_toy_datasets, toy_label_maps
from tests.helpers import REPO, requires_detectron2, run_tool_main, slow, subprocess_env

TOOLS = ("prepare_voc.py", "prepare_pascal_context.py", "prepare_coco_object.py",
         "prepare_coco_stuff.py", "prepare_cityscapes.py", "prepare_ade20k.py")

# Runs in a fresh process so that Detectron2's builtin splits are registered under the toy root.
AUDIT = r"""
import json, os, sys
import numpy as np
import torch
import cdam_d2
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, detection_utils as utils
from cdam_d2.data.toy import toy_label_maps
from cdam_d2.engine.trainer import Trainer
from cdam_d2.evaluation import SemSegEvaluator

mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
report = {"checked": {}, "mismatches": [], "miou": {}}
for name, truth in toy_label_maps().items():
    records = DatasetCatalog.get(name)
    report["checked"][name] = len(records)
    for record in records:
        key = os.path.splitext(os.path.basename(record["file_name"]))[0].replace("_leftImg8bit", "")
        mapped = mapper(dict(record))["sem_seg"].numpy()
        grey = utils.read_image(record["sem_seg_file_name"], "L").squeeze(2)
        for how, labels in (("DatasetMapper", mapped), ("read_image L", grey)):
            if not np.array_equal(labels, truth[key]):
                report["mismatches"].append([name, key, how])

cfg = get_cfg()
cdam_d2.add_cdam_config(cfg)
cfg.OUTPUT_DIR = sys.argv[1]
for name in ("cityscapes_fine_sem_seg_val", "ade20k_sem_seg_val", "cdam_coco_stuff171_sem_seg_val"):
    evaluator = Trainer.build_evaluator(cfg, name)
    assert isinstance(evaluator, SemSegEvaluator), type(evaluator)
    num_classes = len(evaluator._class_names)
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        truth = torch.from_numpy(utils.read_image(record["sem_seg_file_name"], "L").squeeze(2).copy())
        scores = torch.nn.functional.one_hot(truth.long().clamp(max=num_classes - 1), num_classes)
        evaluator.process([record], [{"sem_seg": scores.permute(2, 0, 1).float()}])
    report["miou"][name] = evaluator.evaluate()["sem_seg"]["mIoU"]
print("REPORT " + json.dumps(report))
"""


@slow
@requires_detectron2
class StockMapperAuditTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = cls._tmp.name
        make_toy_datasets(cls.root, prepare=False)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def test_prepared_splits_read_true_labels_through_the_stock_mapper(self):
        from detectron2.data import detection_utils as utils

        from cdam_d2.data.datasets import LAYOUTS, load_sem_seg_records

        truth = toy_label_maps()
        # The raw download: VOC's palette PNGs, which a grey-level read gets wrong ...
        voc = os.path.join(self.root, "VOCdevkit", "VOC2012")
        image_id = sorted(truth["cdam_voc21_sem_seg_val"])[0]
        palette_path = os.path.join(voc, "SegmentationClass", image_id + ".png")
        with Image.open(palette_path) as image:
            self.assertEqual(image.mode, "P")
        grey = utils.read_image(palette_path, "L").squeeze(2)
        self.assertFalse(np.array_equal(grey, truth["cdam_voc21_sem_seg_val"][image_id]))
        self.assertTrue({38, 220} & set(np.unique(grey).tolist()))  # index 1 -> 38, 255 -> 220
        # ... are never handed out: before the conversion the split names the tool to run.
        with self.assertRaisesRegex(FileNotFoundError, "tools/prepare_voc.py"):
            load_sem_seg_records(LAYOUTS["cdam_voc21_sem_seg_val"], self.root)

        for tool in TOOLS:
            run_tool_main(tool, [self.root, "--workers", "1"])
        for tool in TOOLS:  # idempotent: a second run finds everything done
            output = run_tool_main(tool, [self.root, "--workers", "1"])
            self.assertNotRegex(output, r"wrote [1-9]", tool)
            self.assertRegex(output, r"already done [1-9]", tool)

        env = subprocess_env(DETECTRON2_DATASETS=self.root, OMP_NUM_THREADS="1")
        result = subprocess.run(
            [sys.executable, "-c", AUDIT, os.path.join(self.root, "output")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        report = json.loads(lines[-1][len("REPORT "):])
        self.assertEqual(report["checked"], {name: len(maps) for name, maps in truth.items()})
        self.assertEqual(len(report["checked"]), 10)  # every split with label maps, 8 benchmarks
        self.assertEqual(report["mismatches"], [])
        # Perfect predictions through the Trainer's evaluator: 100 mIoU, Cityscapes' builtin included.
        self.assertEqual(report["miou"], {name: 100.0 for name in report["miou"]})
        self.assertEqual(len(report["miou"]), 3)


if __name__ == "__main__":
    unittest.main()
