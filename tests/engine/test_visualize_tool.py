"""tools/visualize.py on the toy datasets: one panel per chosen image for a ClusterCAM and a CDAM config, and
clear errors for bad arguments."""
import contextlib
import io
import os
import runpy
import tempfile
import unittest

import numpy as np
from PIL import Image

from tests.helpers import CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, REPO, RegisteredToyDatasets, requires_detectron2

TRAIN_AUG = "cdam_voc21_sem_seg_train_aug"
VAL = "cdam_voc21_sem_seg_val"


@requires_detectron2
class VisualizeToolTest(RegisteredToyDatasets, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tool = runpy.run_path(os.path.join(REPO, "tools", "visualize.py"))

    def run_tool(self, *args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = self.tool["main"](list(args))
            except SystemExit as exit:
                code = exit.code
        return code, out.getvalue(), err.getvalue()

    def test_clustercam_panels_of_evenly_spread_images(self):
        from detectron2.data import DatasetCatalog

        records = DatasetCatalog.get(TRAIN_AUG)
        with tempfile.TemporaryDirectory() as out:
            code, printed, _ = self.run_tool("--config-file", CLUSTERCAM_TOY_CONFIG, "--dataset", TRAIN_AUG, "--num", "2",
                                             "--output", out, "--tile-height", "96", "MODEL.DEVICE", "cpu",
                                             "MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False")
            self.assertEqual(code, 0)
            expected = sorted(f"{records[i]['image_id']}.png" for i in (0, len(records) - 1))
            self.assertEqual(sorted(os.listdir(out)), expected)
            self.assertIn("wrote", printed)
            with Image.open(os.path.join(out, expected[0])) as panel:
                self.assertEqual(panel.mode, "RGB")
                self.assertGreater(panel.width, 4 * 96)  # four columns

    def test_cdam_panel_of_a_chosen_image_and_patch(self):
        from detectron2.data import DatasetCatalog

        image_id = DatasetCatalog.get(VAL)[1]["image_id"]
        with tempfile.TemporaryDirectory() as out:
            code, _, _ = self.run_tool("--config-file", CDAM_TOY_CONFIG, "--dataset", VAL, "--images", image_id,
                                       "--patch", "20,30", "--output", out, "--tile-height", "96", "MODEL.DEVICE", "cpu")
            self.assertEqual(code, 0)
            self.assertEqual(os.listdir(out), [f"{image_id}.png"])
            panel = np.asarray(Image.open(os.path.join(out, f"{image_id}.png")))
            self.assertEqual(panel.ndim, 3)

    def test_bad_arguments_are_named(self):
        for args, message in (
            (["--config-file", CDAM_TOY_CONFIG, "--dataset", VAL, "--images", "nope"], "images ['nope'] are not in"),
            (["--config-file", CDAM_TOY_CONFIG, "--dataset", VAL, "--patch", "3"], "--patch '3' must be two numbers"),
            (["--config-file", CLUSTERCAM_TOY_CONFIG, "--dataset", VAL, "--patch", "3,4"], "--patch applies to CDAM"),
            (["--config-file", CDAM_TOY_CONFIG, "--dataset", "no_such_dataset"], "'no_such_dataset' is not registered"),
            (["--config-file", CDAM_TOY_CONFIG, "--dataset", VAL, "--num", "0"], "--num must be at least 1"),
        ):
            with self.subTest(args=args):
                code, _, err = self.run_tool(*args, "--output", "unused", "MODEL.DEVICE", "cpu")
                self.assertEqual(code, 2)
                self.assertIn(message, err)

    def test_errors_building_the_model_are_usage_errors(self):
        with tempfile.TemporaryDirectory() as folder:
            bad_key_file = os.path.join(folder, "bad_key.yaml")
            with open(bad_key_file, "w") as f:
                f.write(f"_BASE_: {CLUSTERCAM_TOY_CONFIG}\nMODEL:\n  NO_SUCH_KEY: 1\n")
            damaged = os.path.join(folder, "damaged.pth")
            with open(damaged, "wb") as f:
                f.write(b"not a checkpoint")
            missing = os.path.join(folder, "missing.pth")
            for config, opts, message in (
                (CLUSTERCAM_TOY_CONFIG, ["MODEL.WEIGHTS", missing], f"MODEL.WEIGHTS: weights file '{missing}' does not"),
                (CLUSTERCAM_TOY_CONFIG, ["MODEL.WEIGHTS", damaged], f"'{damaged}', given by MODEL.WEIGHTS, cannot be read"),
                (CDAM_TOY_CONFIG, ["MODEL.CDAM.NO_SUCH_KEY", "1"], "Non-existent key: MODEL.CDAM.NO_SUCH_KEY"),
                (bad_key_file, [], "Non-existent config key: MODEL.NO_SUCH_KEY"),
            ):
                with self.subTest(opts=opts or config):
                    code, _, err = self.run_tool("--config-file", config, "--dataset", TRAIN_AUG, "--num", "1",
                                                 "--output", os.path.join(folder, "panels"), "MODEL.DEVICE", "cpu",
                                                 *opts)
                    self.assertEqual(code, 2)
                    self.assertNotIn("Traceback", err)
                    self.assertIn(f"error: {message}", err.splitlines()[-1])
                    self.assertFalse(os.path.exists(os.path.join(folder, "panels")))


if __name__ == "__main__":
    unittest.main()
