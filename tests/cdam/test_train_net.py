"""CDAM through tools/train_net.py --eval-only on the toy VOC layout, in a subprocess."""
import os
import tempfile
import unittest

import torch

from tests.helpers import CDAM_TOY_CONFIG, requires_detectron2, run_tool_script, slow, subprocess_env


@slow
@requires_detectron2
class TestCDAMTrainNet(unittest.TestCase):
    def test_toy_eval_only(self):
        from cdam_d2.data.toy import make_toy_datasets

        with tempfile.TemporaryDirectory() as folder:
            root, output = os.path.join(folder, "datasets"), os.path.join(folder, "out")
            make_toy_datasets(root)
            run_tool_script("train_net.py", ["--config-file", CDAM_TOY_CONFIG, "--eval-only", "MODEL.DEVICE", "cpu",
                                             "OUTPUT_DIR", output], subprocess_env(DETECTRON2_DATASETS=root))
            results = torch.load(os.path.join(output, "inference", "cdam_voc21_sem_seg_val",
                                              "sem_seg_evaluation.pth"), weights_only=True)
        self.assertIn("mIoU", results)


if __name__ == "__main__":
    unittest.main()
