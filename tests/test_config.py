"""Plugin config keys, every shipped YAML, and configs from users read as data (no Python tags)."""
import contextlib
import glob
import io
import os
import runpy
import subprocess
import sys
import tempfile
import unittest

from tests.d2_guard import requires_detectron2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@requires_detectron2
class ConfigTest(unittest.TestCase):
    def test_add_cdam_config_is_idempotent(self):
        from detectron2.config import get_cfg

        from cdam_d2 import add_cdam_config

        cfg = get_cfg()
        add_cdam_config(cfg)
        cfg.CDAM_D2.EVALUATOR.CONVENTION = "mmseg"
        add_cdam_config(cfg)  # a second call must not reset values
        self.assertEqual(cfg.CDAM_D2.EVALUATOR.CONVENTION, "mmseg")
        for key in ("CDAM", "CLUSTERCAM"):
            self.assertIn(key, cfg.MODEL)

    def test_every_yaml_merges(self):
        from detectron2.config import get_cfg
        from detectron2.data import DatasetCatalog

        from cdam_d2 import add_cdam_config
        from cdam_d2.second_stage.config import add_second_stage_config

        paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
        self.assertTrue(paths)
        for path in paths:
            with self.subTest(config=os.path.relpath(path, REPO)):
                second_stage = os.path.basename(os.path.dirname(path)) == "second_stage"
                cfg = get_cfg()
                (add_second_stage_config if second_stage else add_cdam_config)(cfg)
                cfg.merge_from_file(path, allow_unsafe=False)  # shipped configs are plain data
                expected = ("SemanticSegmentor",) if second_stage else ("CDAM", "ClusterCAM")
                self.assertIn(cfg.MODEL.META_ARCHITECTURE, expected)
                self.assertEqual(cfg.INPUT.FORMAT, "RGB")
                self.assertEqual(cfg.MODEL.DEVICE, "cuda")  # never pinned in YAML
                for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
                    if name in DETECTRON2_BUILTIN:  # reused, not re-registered: it must be Detectron2's own
                        self.assertIn(name, DatasetCatalog.list())
                    else:
                        self.assertTrue(name.startswith("cdam_"), name)


# Detectron2's own registrations that CDAM configs evaluate on (cdam_d2 registers only cdam_* names).
DETECTRON2_BUILTIN = ("ade20k_sem_seg_val", "cityscapes_fine_sem_seg_val")



def write_config_with_python_tag(folder, marker):
    """A config whose Python tag would run a shell command creating ``marker``, and one that
    inherits it through ``_BASE_``."""
    evil = os.path.join(folder, "evil.yaml")
    with open(evil, "w") as f:
        f.write(f'_BASE_: "{os.path.join(REPO, "configs", "cdam_voc21.yaml")}"\n'
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
        namespace = runpy.run_path(os.path.join(REPO, "tools", "export_pseudo_labels.py"))
        argv = ["--config-file", self.evil, "--dataset", "d", "--output", "o"]
        args = namespace["parse_args"](argv)
        self.assertFalse(args.allow_unsafe_config)
        with self.assertRaises(ValueError) as raised:
            namespace["setup_cfg"](args)
        self.assert_refused(raised, self.evil)
        self.assertTrue(namespace["parse_args"]([*argv, "--allow-unsafe-config"]).allow_unsafe_config)

    def test_demo_refuses_python_tags_before_building_anything(self):
        from cdam_d2.engine.predictor import load_predictor_cfg

        namespace = runpy.run_path(os.path.join(REPO, "tools", "demo.py"))
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

    def test_train_net_refuses_python_tags_and_accepts_the_flag(self):
        command = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--config-file", self.evil,
                   "--eval-only", "OUTPUT_DIR", os.path.join(self._tmp.name, "out")]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
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
