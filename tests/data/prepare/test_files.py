"""Atomic writing, resumability and missing-input errors shared by the preparation tools."""
import contextlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

from cdam_d2.utils import files
from cdam_d2.utils.files import (
    is_complete_file,
    prepare_output_dir,
    remove_stale_temp_files,
    require_path,
    save_json,
    save_label_png,
    save_lines,
    temp_path_for,
    write_atomically,
)
from cdam_d2.data.prepare.parallel import parallel_map, write_missing
from tests.helpers import slow, subprocess_env, tool_namespace, truncate_half

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


def _marker_size(task):
    return 2, 3


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

    def test_json_and_lines_in_a_new_folder_with_the_asked_layout(self):
        record = {"weights": "model_best.pth", "value": 1.5, "iteration": 7}
        sorted_path = os.path.join(self.root, "new", "sorted.json")
        save_json(record, sorted_path)
        kept_path = os.path.join(self.root, "new", "deeper", "kept.json")
        save_json(record, kept_path, indent=2, sort_keys=False)
        with open(sorted_path) as f:
            self.assertEqual(f.read(), '{"iteration": 7, "value": 1.5, "weights": "model_best.pth"}\n')
        with open(kept_path) as f:
            self.assertEqual(f.read(), '{\n  "weights": "model_best.pth",\n  "value": 1.5,\n  "iteration": 7\n}\n')
        lines_path = os.path.join(self.root, "other", "ids.txt")
        save_lines(["a", 2], lines_path)
        with open(lines_path) as f:
            self.assertEqual(f.read(), "a\n2\n")
        self.assertEqual(sorted(os.listdir(os.path.join(self.root, "new"))), ["deeper", "sorted.json"])

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

    def test_temp_names_are_unique_per_call(self):
        path = os.path.join(self.root, "x.png")
        self.assertNotEqual(temp_path_for(path), temp_path_for(path))

    @slow
    def test_only_temps_of_stopped_writers_are_stale(self):
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  env=subprocess_env(), capture_output=True, text=True, check=True)
        dead_pid = int(finished.stdout)  # that process has exited

        def temp_name(pid, host=files._HOST):
            return f".a.png.{host}.{pid}.0123abcd.tmp"

        stale = [temp_name(dead_pid), temp_name(os.getpid())]  # own pid, not being written
        kept = [temp_name(os.getppid()),  # a live writer
                temp_name(dead_pid, host="otherhost"),  # another host: its pids mean nothing here
                "a.png", ".hidden", "b.tmp", ".a.png.123.tmp"]
        for name in stale + kept:
            open(os.path.join(self.root, name), "w").close()
        self.assertEqual(remove_stale_temp_files(self.root), 2)
        self.assertEqual(sorted(os.listdir(self.root)), sorted(kept))

    def test_a_temp_being_written_is_not_stale(self):
        path = os.path.join(self.root, "a.png")

        def write_while_cleaning(temp_path):
            _write_png(temp_path)
            self.assertEqual(remove_stale_temp_files(self.root), 0)

        write_atomically(path, write_while_cleaning)
        self.assertTrue(is_complete_file(path))


def _write_png(path, value=1, size=(20, 30)):
    Image.fromarray(np.full(size, value, dtype=np.uint8)).save(path, format="PNG")


def _writer_process(directory, count, value, started, proceed):
    """One export run: clean the folder, write ``count`` PNGs; the first write waits after its
    temp file exists until ``proceed`` is set, so the other run's start-up cleaning happens then."""
    prepare_output_dir(directory)
    for index in range(count):
        def write(temp_path):
            _write_png(temp_path, value)
            if index == 0 and started is not None:
                started.set()
                proceed.wait(30)

        write_atomically(os.path.join(directory, f"{value}_{index}.png"), write)
        prepare_output_dir(directory)  # as a run starting at any moment would


@slow
class TestConcurrentWriters(unittest.TestCase):
    def test_two_writer_processes_in_one_folder_keep_each_others_temp_files(self):
        context = multiprocessing.get_context("fork")
        started, proceed = context.Event(), context.Event()
        with tempfile.TemporaryDirectory() as root:
            first = context.Process(target=_writer_process, args=(root, 5, 1, started, proceed))
            first.start()
            self.assertTrue(started.wait(60), "first writer did not start")
            second = context.Process(target=_writer_process, args=(root, 20, 2, None, None))
            second.start()
            second.join(60)
            proceed.set()
            first.join(60)
            self.assertEqual((first.exitcode, second.exitcode), (0, 0))
            names = sorted(os.listdir(root))
            expected = sorted([f"1_{i}.png" for i in range(5)] + [f"2_{i}.png" for i in range(20)])
            self.assertEqual(names, expected)  # every output, no temp file left
            for name in names:
                with Image.open(os.path.join(root, name)) as image:
                    np.testing.assert_array_equal(np.array(image), int(name[0]))


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

    @slow
    def test_damaged_outputs_are_rewritten_and_good_ones_kept(self):
        with tempfile.TemporaryDirectory() as root:
            paths = [os.path.join(root, f"{name}.png") for name in ("good", "cut", "empty", "small")]
            for path in paths:
                save_label_png(np.full((2, 3), 7, dtype=np.uint8), path)
            truncate_half(paths[1])
            open(paths[2], "w").close()
            save_label_png(np.full((1, 3), 7, dtype=np.uint8), paths[3])  # wrong size
            for workers in (1, 2):
                tasks = [(path, workers) for path in paths]
                summary = write_missing(_write_marker, tasks, workers=workers, size_of=_marker_size)
                if workers == 1:
                    self.assertEqual((summary.written, summary.skipped), (3, 1))
                    self.assertEqual(summary.damaged, tuple(paths[1:]))
                else:  # everything is complete now
                    self.assertEqual((summary.written, summary.skipped, summary.damaged), (0, 4, ()))
            values = [np.array(Image.open(path)) for path in paths]
            np.testing.assert_array_equal(values[0], 7)  # never rewritten
            for value in values[1:]:
                np.testing.assert_array_equal(value, np.ones((2, 3)))

    def test_is_complete_file(self):
        with tempfile.TemporaryDirectory() as root:
            png, json_path, other = (os.path.join(root, name) for name in ("a.png", "a.json", "a.npy"))
            noise = np.random.default_rng(0).integers(0, 21, (20, 30), dtype=np.uint8)  # compresses badly
            Image.fromarray(noise).save(png)
            with open(json_path, "w") as f:
                json.dump({"a": [1, 2]}, f)
            open(other, "w").close()
            self.assertTrue(all(map(is_complete_file, (png, json_path, other))))
            self.assertTrue(is_complete_file(png, size=(20, 30)))
            self.assertFalse(is_complete_file(png, size=(30, 20)))
            self.assertFalse(is_complete_file(os.path.join(root, "missing.png")))
            with open(png, "rb") as f:
                data = f.read()
            for cut in range(0, len(data) // 2, 3):  # every kind of cut: header, chunk, pixel data
                with open(png, "wb") as f:
                    f.write(data[:cut])
                self.assertFalse(is_complete_file(png), cut)
            truncate_half(json_path)
            self.assertFalse(is_complete_file(json_path))

    @slow
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
            main = tool_namespace(name)["main"]
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
                tool = tool_namespace(name)
                stderr = io.StringIO()
                with contextlib.redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
                    tool["cli"].run(tool["main"], argv + [root])
                self.assertEqual(raised.exception.code, 1)
                message = stderr.getvalue()
                self.assertIn(root, message, name)
                self.assertIn("Download", message, name)


if __name__ == "__main__":
    unittest.main()
