"""Configs from users are read as data: a Python tag in a YAML file (or in one of its _BASE_ files) is refused
with its file and line, without running it, by load_cfg and every tool that loads configs, unless the user
opts in with --allow-unsafe-config."""
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

from tests.helpers import CONFIGS, REPO, TOOLS, requires_detectron2, slow, subprocess_env, tool_namespace


def write_config_with_python_tag(folder, marker):
    """A config whose Python tag would run a shell command creating ``marker``, and one that
    inherits it through ``_BASE_``."""
    evil = os.path.join(folder, "evil.yaml")
    with open(evil, "w") as f:
        f.write(f'_BASE_: "{os.path.join(CONFIGS, "cdam_voc21.yaml")}"\n'
                f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    child = os.path.join(folder, "child.yaml")
    with open(child, "w") as f:
        f.write('_BASE_: "evil.yaml"\nOUTPUT_DIR: "trusted"\n')
    return evil, child


@requires_detectron2
class UnsafeConfigTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.marker = os.path.join(self._tmp.name, "command_ran")
        self.evil, self.child = write_config_with_python_tag(self._tmp.name, self.marker)

    def tearDown(self):
        self._tmp.cleanup()

    def assert_refused(self, raised, path):
        message = str(raised.exception)
        self.assertIn(f"{path}:2", message)  # file and line of the tag
        self.assertIn("python/object/apply:os.system", message)
        self.assertIn("--allow-unsafe-config", message)
        self.assertFalse(os.path.exists(self.marker), "the config ran its command")

    def test_python_tag_is_refused_without_running_it(self):
        from cdam_d2.engine import UnsafeConfigError, load_cfg

        with self.assertRaises(UnsafeConfigError) as raised:
            load_cfg(self.evil)
        self.assert_refused(raised, self.evil)
        with self.assertRaises(UnsafeConfigError) as raised:
            load_cfg(self.child)
        self.assert_refused(raised, self.evil)
        self.assertIn(f"a _BASE_ of {self.child}", str(raised.exception))

    def test_opt_in_loads_the_trusted_file(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config
        from cdam_d2.engine import load_cfg

        add_cdam_config(get_cfg()).merge_from_file(self.evil)  # Detectron2's default runs the tag ...
        self.assertTrue(os.path.exists(self.marker))  # ... so the refusals above prove something
        os.remove(self.marker)
        cfg, _ = load_cfg(self.child, allow_unsafe_yaml=True)
        self.assertTrue(os.path.exists(self.marker))
        self.assertEqual((cfg.SEED, cfg.OUTPUT_DIR), (0, "trusted"))  # SEED = the command's exit status

    def test_every_config_loading_tool_refuses_python_tags(self):
        namespace = tool_namespace("export_pseudo_labels.py")
        argv = ["--config-file", self.evil, "--dataset", "d", "--output", "o"]
        args = namespace["parse_args"](argv)
        self.assertFalse(args.allow_unsafe_config)
        with self.assertRaises(ValueError) as raised:
            namespace["setup_cfg"](args)
        self.assert_refused(raised, self.evil)
        self.assertTrue(namespace["parse_args"]([*argv, "--allow-unsafe-config"]).allow_unsafe_config)

    def test_demo_refuses_python_tags_before_building_anything(self):
        from cdam_d2.engine.predictor import load_predictor_cfg

        namespace = tool_namespace("demo.py")
        argv = ["--config-file", self.evil, "--input", "a.jpg", "--output", "o"]
        stderr = io.StringIO()
        with self.assertRaises(SystemExit) as exited, contextlib.redirect_stderr(stderr):
            namespace["main"](argv)
        self.assertEqual(exited.exception.code, 2)
        self.assertIn(self.evil, stderr.getvalue())
        self.assertIn("--allow-unsafe-config", stderr.getvalue())
        self.assertFalse(os.path.exists(self.marker))
        trusted = namespace["build_parser"]().parse_args([*argv, "--allow-unsafe-config"])
        self.assertTrue(trusted.allow_unsafe_config)
        load_predictor_cfg(trusted.config_file, allow_unsafe_yaml=trusted.allow_unsafe_config)
        self.assertTrue(os.path.exists(self.marker))

    @slow
    def test_train_net_refuses_python_tags_and_accepts_the_flag(self):
        command = [sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", self.evil,
                   "--eval-only", "OUTPUT_DIR", os.path.join(self._tmp.name, "out")]
        done = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("UnsafeConfigError", done.stderr)
        self.assertIn(f"{self.evil}:2", done.stderr)
        self.assertIn("--allow-unsafe-config", done.stderr)
        self.assertFalse(os.path.exists(self.marker))
        from cdam_d2.engine import argument_parser  # the parser of tools/train_net.py

        args = argument_parser().parse_args(["--config-file", self.evil, "--allow-unsafe-config"])
        self.assertTrue(args.allow_unsafe_config)


if __name__ == "__main__":
    unittest.main()
