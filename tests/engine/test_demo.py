"""tools/demo.py as a new user runs it, and the overlay/legend rendering behind it."""
import contextlib
import io
import os
import tempfile
import unittest
from unittest import mock

import numpy as np

from tests.helpers import (CDAM_TOY_CONFIG, CLUSTERCAM_TOY_CONFIG, import_tool, one_template_file, random_image,
                           requires_detectron2)


def save_random_image(path, size, seed):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(random_image(seed, size)).save(path)


def run_demo(argv):
    """(exit status, stderr) of demo.main; argparse errors exit with status 2."""
    demo = import_tool("demo")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            status = demo.main(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, stderr.getvalue()


class TestOverlay(unittest.TestCase):
    def test_legend_lists_every_class_beside_a_small_image(self):
        from cdam_d2.data.datasets.builtin_meta import CONTEXT60_CLASSES
        from cdam_d2.engine.overlay import blend, class_colors, render_overlay

        names = list(CONTEXT60_CLASSES)
        colors = class_colors(names)
        self.assertEqual(len({tuple(c) for c in colors}), 60)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        labels = np.zeros((300, 400), np.int64)
        for index in range(1, 28):  # 28 classes present, as in Context60 on a 300-px photo
            labels[(index // 7) * 70:(index // 7) * 70 + 60, (index % 7) * 55:(index % 7) * 55 + 50] = 2 * index
        canvas = np.asarray(render_overlay(image, labels, names, 0.5, colors))
        # Enlarged to the minimum render side (nearest labels), legend on the extended canvas to the right.
        self.assertEqual(canvas.shape[0], 512)
        width = round(400 * 512 / 300)
        self.assertGreater(canvas.shape[1], width)
        legend = canvas[:, width:].reshape(-1, 3)
        shown = {index for index in np.unique(labels) if (legend == colors[index]).all(axis=1).any()}
        self.assertEqual(shown, set(np.unique(labels).tolist()))
        # The picture part of the canvas is exactly the blended, enlarged image: the legend covers none of it.
        from PIL import Image

        big_image = np.asarray(Image.fromarray(image).resize((width, 512), Image.BILINEAR))
        big_labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((width, 512), Image.NEAREST))
        np.testing.assert_array_equal(canvas[:, :width], blend(big_image, big_labels, colors, 0.5))

    def test_label_png_holds_the_indices(self):
        from PIL import Image

        from cdam_d2.engine.overlay import class_colors, save_label_png

        labels = np.random.default_rng(1).integers(0, 150, (20, 30))
        with tempfile.TemporaryDirectory() as folder:
            save_label_png(labels, os.path.join(folder, "a.png"), class_colors(["c"] * 150))
            picture = Image.open(os.path.join(folder, "a.png"))
            self.assertEqual(picture.mode, "P")
            np.testing.assert_array_equal(np.asarray(picture), labels)
            save_label_png(labels + 300, os.path.join(folder, "b.png"))
            np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(folder, "b.png"))), labels + 300)

    def test_output_names_never_collide(self):
        demo = import_tool("demo")
        paths = ["/x/a/img.jpg", "/x/b/img.jpg", "/x/b/img.png", "/x/b/other.jpg"]
        self.assertEqual(demo.output_names(paths),
                         ["a/img", os.path.join("b", "img.jpg"), os.path.join("b", "img.png"), os.path.join("b", "other")])
        self.assertEqual(demo.output_names(["/x/one.jpg", "/x/two.jpg"]), ["one", "two"])


@requires_detectron2
class TestDemo(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.root = self.folder.name
        self.templates = one_template_file(self.root)

    def tearDown(self):
        self.folder.cleanup()

    def test_cdam_run_reports_unreadable_files_and_keeps_same_names_apart(self):
        from PIL import Image

        save_random_image(os.path.join(self.root, "a", "img.jpg"), (90, 120), 0)
        save_random_image(os.path.join(self.root, "b", "img.jpg"), (70, 64), 1)
        grey = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30)
        Image.fromarray(grey).save(os.path.join(self.root, "b", "grey16.png"))
        with open(os.path.join(self.root, "b", "broken.jpg"), "wb") as f:
            f.write(b"\xff\xd8 truncated")
        output = os.path.join(self.root, "out")
        status, stderr = run_demo(["--config-file", CDAM_TOY_CONFIG, "--input", os.path.join(self.root, "a"),
                                   os.path.join(self.root, "b"), "--output", output, "--vocabulary",
                                   "background; cat; sofa, couch", "--opts", "MODEL.DEVICE", "cpu",
                                   "MODEL.CDAM.TEMPLATES", self.templates, "MODEL.CDAM.ALPHA", "0.0"])
        self.assertEqual(status, 1, stderr)  # one image failed
        self.assertIn("broken.jpg", stderr)
        written = sorted(os.path.relpath(os.path.join(d, n), output) for d, _, files in os.walk(output) for n in files)
        self.assertEqual(written, ["a/img.png", "a/img_labels.png", "b/grey16.png", "b/grey16_labels.png",
                                   "b/img.png", "b/img_labels.png"])
        for name, size in [("a/img", (90, 120)), ("b/img", (70, 64)), ("b/grey16", (40, 50))]:
            labels = np.asarray(Image.open(os.path.join(output, f"{name}_labels.png")))
            self.assertEqual(labels.shape, size)
            self.assertLessEqual(int(labels.max()), 2)
            self.assertGreaterEqual(Image.open(os.path.join(output, f"{name}.png")).size[1], 512)

    def test_dataset_classes_and_clustercam(self):
        from PIL import Image

        save_random_image(os.path.join(self.root, "in", "img.png"), (48, 64), 2)
        for config, opts in [(CDAM_TOY_CONFIG, ["MODEL.CDAM.TEMPLATES", self.templates]),
                             (CLUSTERCAM_TOY_CONFIG, ["MODEL.CLUSTERCAM.TEST.CRF.ENABLED", "False"])]:
            output = os.path.join(self.root, os.path.basename(config))
            status, stderr = run_demo(["--config-file", config, "--input", os.path.join(self.root, "in"),
                                       "--output", output, "--opts", "MODEL.DEVICE", "cpu", *opts])
            self.assertEqual(status, 0, stderr)
            labels = np.asarray(Image.open(os.path.join(output, "img_labels.png")))
            self.assertEqual(labels.shape, (48, 64))
            self.assertLess(int(labels.max()), 21)

    def test_bad_arguments_fail_before_any_model_is_built(self):
        image = os.path.join(self.root, "in", "img.png")
        save_random_image(image, (20, 20), 3)
        base = ["--config-file", CDAM_TOY_CONFIG, "--output", os.path.join(self.root, "out")]
        cases = [
            (["--input", image, "--vocabulary", ""], "empty"),
            (["--input", image, "--vocabulary", "a;;b"], "empty name"),
            (["--input", image, "--opacity", "1.5"], "opacity"),
            (["--input", image, "MODEL.CDAM.ALPHA", "0.0"], "--opts"),
            (["--input", os.path.join(self.root, "missing.jpg")], "missing.jpg"),
            (["--input", image, "--opts", "MODEL.CDAM.ALPHA", "0"], "ALPHA"),
            (["--input", image, "--dataset", "no_such_dataset"], "no_such_dataset"),
            (["--config-file", CLUSTERCAM_TOY_CONFIG, "--input", image, "--vocabulary", "cat"], "fixed classes"),
        ]
        with mock.patch("cdam_d2.engine.predictor.build_predictor", side_effect=AssertionError("model built")):
            for arguments, message in cases:
                status, stderr = run_demo(base + arguments)
                self.assertEqual(status, 2, (arguments, stderr))
                self.assertIn(message, stderr, arguments)


if __name__ == "__main__":
    unittest.main()
