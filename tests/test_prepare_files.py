"""Atomic writing, resumability and missing-input errors shared by the preparation tools."""
import contextlib
import io
import os
import runpy
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.data.prepare.files import (
    remove_stale_temp_files,
    require_path,
    save_label_png,
    temp_path_for,
    write_atomically,
)
from cdam_d2.data.prepare.parallel import parallel_map, write_missing

TOOLS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
TOOL_NAMES = (
    "prepare_coco_object.py",
    "prepare_pascal_context.py",
    "prepare_image_labels.py",
    "prepare_coco14.py",
    "prepare_voc.py",
    "prepare_coco_stuff.py",
    "prepare_cityscapes.py",
    "prepare_ade20k.py",
)


def _square(x):
    return x * x


def _write_marker(task):
    path, value = task
    save_label_png(np.full((2, 3), value, dtype=np.uint8), path)


class TestAtomicWrites(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def test_label_png_round_trip(self):
        label = np.arange(12, dtype=np.uint8).reshape(3, 4)
        path = os.path.join(self.root, "a.png")
        save_label_png(label, path)
        with Image.open(path) as image:
            self.assertEqual(image.mode, "L")
            np.testing.assert_array_equal(np.array(image), label)
        self.assertEqual(os.listdir(self.root), ["a.png"])

    def test_rejects_non_uint8_label(self):
        with self.assertRaisesRegex(ValueError, "uint8"):
            save_label_png(np.zeros((2, 2), dtype=np.int64), os.path.join(self.root, "a.png"))

    def test_failed_write_leaves_nothing(self):
        path = os.path.join(self.root, "out.json")

        def failing_write(temp_path):
            with open(temp_path, "w") as f:
                f.write("partial")
            raise KeyboardInterrupt

        with self.assertRaises(KeyboardInterrupt):
            write_atomically(path, failing_write)
        self.assertEqual(os.listdir(self.root), [])

    def test_temp_name_is_hidden_and_not_an_output_name(self):
        temp = os.path.basename(temp_path_for(os.path.join(self.root, "x.png")))
        self.assertTrue(temp.startswith("."))
        self.assertFalse(temp.endswith(".png"))

    def test_remove_stale_temp_files_only_touches_temp_names(self):
        names = [".a.png.123.tmp", "a.png", ".hidden", "b.tmp"]
        for name in names:
            open(os.path.join(self.root, name), "w").close()
        self.assertEqual(remove_stale_temp_files(self.root), 1)
        self.assertEqual(sorted(os.listdir(self.root)), sorted(names[1:]))


class TestResumableWriting(unittest.TestCase):
    def test_finished_outputs_are_skipped_and_leftover_temp_is_not_finished(self):
        with tempfile.TemporaryDirectory() as root:
            done, todo = os.path.join(root, "done.png"), os.path.join(root, "todo.png")
            save_label_png(np.full((2, 3), 7, dtype=np.uint8), done)
            with open(temp_path_for(todo), "w") as f:  # an interrupted earlier write
                f.write("garbage")
            summary = write_missing(_write_marker, [(done, 1), (todo, 2)], workers=1)
            self.assertEqual((summary.written, summary.skipped), (1, 1))
            np.testing.assert_array_equal(np.array(Image.open(done)), 7)  # untouched
            np.testing.assert_array_equal(np.array(Image.open(todo)), 2)

    def test_parallel_map_keeps_order_with_a_pool(self):
        tasks = list(range(50))
        self.assertEqual(parallel_map(_square, tasks, workers=2), [t * t for t in tasks])
        self.assertEqual(parallel_map(_square, tasks, workers=1), [t * t for t in tasks])


class TestInputErrors(unittest.TestCase):
    def test_require_path_names_path_and_hint(self):
        missing = os.path.join(tempfile.gettempdir(), "definitely", "missing.json")
        with self.assertRaises(FileNotFoundError) as raised:
            require_path(missing, "COCO instances", "Download it from X.")
        self.assertIn(missing, str(raised.exception))
        self.assertIn("Download it from X.", str(raised.exception))


class TestCommandLines(unittest.TestCase):
    def test_help_describes_layout(self):
        for name in TOOL_NAMES:
            main = runpy.run_path(os.path.join(TOOLS_DIR, name))["main"]
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout), self.assertRaises(SystemExit) as raised:
                main(["--help"])
            self.assertEqual(raised.exception.code, 0)
            self.assertIn("expected layout", stdout.getvalue(), name)
            self.assertIn("--workers", stdout.getvalue(), name)

    def test_missing_inputs_exit_with_a_message(self):
        argv_of_tool = {
            "prepare_coco_object.py": ["--workers", "1"],
            "prepare_pascal_context.py": ["--workers", "1"],
            "prepare_image_labels.py": ["voc", "--workers", "1"],
            "prepare_coco14.py": ["--workers", "1"],
            "prepare_voc.py": ["--workers", "1"],
            "prepare_coco_stuff.py": ["--workers", "1"],
            "prepare_cityscapes.py": ["--workers", "1"],
            "prepare_ade20k.py": ["--workers", "1"],
        }
        with tempfile.TemporaryDirectory() as root:
            for name, argv in argv_of_tool.items():
                tool = runpy.run_path(os.path.join(TOOLS_DIR, name))
                stderr = io.StringIO()
                with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
                    tool["cli"].run(tool["main"], argv + [root])
                self.assertEqual(raised.exception.code, 1)
                message = stderr.getvalue()
                self.assertIn(root, message, name)
                self.assertIn("Download", message, name)


if __name__ == "__main__":
    unittest.main()
