"""Shared helpers of the test suite, the one place test modules import them from: paths of the
repository, its configs and tools; skip guards for detectron2 and CUDA (``tests/conftest.py`` counts
what they skip); the ``slow`` marker; the environment of subprocesses; toy configs and datasets; and
small file, process and tool helpers used by several test modules.
"""
import contextlib
import importlib
import importlib.util
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np
import pytest
import torch

# ------------------------------------------------------------------------------------------ paths
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
TOOLS = os.path.join(REPO, "tools")
CDAM_TOY_CONFIG = os.path.join(CONFIGS, "quick_schedules", "cdam_voc21_toy_eval.yaml")
CLUSTERCAM_TOY_CONFIG = os.path.join(CONFIGS, "quick_schedules", "clustercam_voc_toy.yaml")
SECOND_STAGE_TOY_CONFIG = os.path.join(CONFIGS, "second_stage", "deeplabv3plus_voc_toy.yaml")

# ------------------------------------------------------------------------------------ skip guards
HAVE_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
DETECTRON2_SKIP_REASON = "detectron2 is not installed"
requires_detectron2 = unittest.skipUnless(HAVE_DETECTRON2, DETECTRON2_SKIP_REASON)

# ``CDAM_D2_CUDA_DRY_RUN=1`` runs the CUDA tests on the CPU instead: a check of their plumbing (config
# keys, entry points, shapes), not of CUDA, so API changes that would break them show up on a machine
# without a GPU. Tests that cannot run on a CPU at all (Detectron2's ``AMPTrainer`` asserts CUDA) take
# ``requires_real_cuda`` and stay skipped in a dry run.
CUDA_DRY_RUN = os.environ.get("CDAM_D2_CUDA_DRY_RUN", "") == "1"
HAVE_CUDA = torch.cuda.is_available()
CUDA_TEST_DEVICE = "cuda" if HAVE_CUDA and not CUDA_DRY_RUN else "cpu"  # where the CUDA tests run
CUDA_SKIP_REASON = "no CUDA GPU"
requires_cuda = unittest.skipUnless(HAVE_CUDA or CUDA_DRY_RUN, CUDA_SKIP_REASON)
requires_real_cuda = unittest.skipUnless(HAVE_CUDA and not CUDA_DRY_RUN, CUDA_SKIP_REASON)

# Tests that start a process (a subprocess, a tool run as a script, ``launch`` with several
# processes, a pool of worker processes) or run an end-to-end schedule (a training run, a whole
# evaluation through ``main`` or ``Trainer.test``): ``pytest -m "not slow"`` leaves them out.
# tests/test_test_suite.py checks that every test starting a process carries it.
slow = pytest.mark.slow


# -------------------------------------------------------------------------------------- processes
def subprocess_env(**overrides):
    """``os.environ`` with ``PYTHONPATH`` = this checkout + the caller's ``PYTHONPATH`` (packages may
    come from there, e.g. on the GPU machine), then ``overrides``. Every subprocess of the tests gets
    it: without it, a cdam_d2 installed from another checkout would be imported instead of this one."""
    python_path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=python_path, **overrides)


def run_tool_script(script, args, env, timeout=600):
    """Run ``tools/<script> args`` in a subprocess with ``env`` (from ``subprocess_env``); returns its stdout
    and stderr together, and fails with their ends if it exits with an error."""
    command = [sys.executable, os.path.join(TOOLS, script), *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done.stdout + done.stderr


def copypaste_miou(log):
    """The mIoU of the last metrics table that Detectron2 printed (``copypaste: mIoU,...`` lines)."""
    match = re.search(r"copypaste: ([0-9.]+),", log.split("copypaste: mIoU")[-1])
    if match is None:
        raise AssertionError(f"no mIoU in the log:\n{log[-2000:]}")
    return float(match.group(1))


def child_pids(pid=None):
    """Pids of the live (non-zombie) child processes of ``pid`` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry))
    return children


def run_with_deadline(function, seconds):
    """Run ``function`` in a thread; fail (instead of hanging the suite) if it has not returned in time.
    Returns the exception it raised, or None."""
    outcome = {}

    def target():
        try:
            function()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"still running after {seconds} s: the call hangs")
    return outcome.get("error")


# ------------------------------------------------------------------------------------------ tools
def documented_commands(page, heading, containing=None):
    """The shell commands of a page's bash block under ``## heading`` (the first block, or the first one
    containing ``containing``): continuation lines joined, comments and blank lines dropped. Tests run a
    page's commands from its own lines, so the page cannot drift from what works."""
    with open(os.path.join(REPO, page)) as f:
        text = f.read()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    block = next(b for b in blocks if containing is None or containing in b)
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def run_documented_toy_sequence(test, commands, tmp, tools, rewrite=None, timeout=900):
    """Run a page's toy command sequence (from :func:`documented_commands`) as a user would.

    ``commands[0]`` exports DETECTRON2_DATASETS and OUT and ``commands[1]`` makes the toy datasets (done
    in-process here, without a process start); the others must call ``tools`` in that order. Each runs in
    bash at the repository root with this interpreter, both variables inside ``tmp``, after
    ``rewrite(command)`` when given, and must exit 0. Returns OUT and the ``CompletedProcess`` of each.
    """
    from cdam_d2.data.toy import make_toy_datasets

    test.assertTrue(commands[0].startswith("export DETECTRON2_DATASETS="), commands[0])
    test.assertEqual(commands[1], "python tools/make_toy_datasets.py $DETECTRON2_DATASETS")
    test.assertEqual([shlex.split(command)[1] for command in commands[2:]], list(tools))
    out = os.path.join(tmp, "run")
    env = subprocess_env(DETECTRON2_DATASETS=os.path.join(tmp, "datasets"), OUT=out, OMP_NUM_THREADS="1")
    make_toy_datasets(env["DETECTRON2_DATASETS"])
    finished = []
    for command in commands[2:]:
        command = command.replace("python ", f"{shlex.quote(sys.executable)} ", 1)
        command = rewrite(command) if rewrite else command
        done = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        test.assertEqual(done.returncode, 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
        finished.append(done)
    return out, finished


def import_tool(name):
    """The module ``tools/<name>.py``, imported as ``name`` (tools are scripts, not a package)."""
    sys.path.insert(0, TOOLS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(TOOLS)


def tool_namespace(name):
    """The globals of ``tools/<name>`` (a file name) run as a module that is not ``__main__``."""
    return runpy.run_path(os.path.join(TOOLS, name))


def run_tool_main(name, argv):
    """Run ``tools/<name>``'s ``main(argv)`` in this process; returns what it printed to stdout."""
    main = tool_namespace(name)["main"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(argv)
    return stdout.getvalue()


# ------------------------------------------------------------------------- configs and toy datasets
def toy_cfg(config, *opts, device="cpu"):
    """``config`` (a toy config, or any shipped one) loaded with ``MODEL.DEVICE device`` and ``opts``
    (KEY VALUE pairs) applied; unfrozen. Needs detectron2."""
    from cdam_d2.engine import load_cfg

    return load_cfg(config, ["MODEL.DEVICE", device, *opts])[0]


def random_image(seed, size=(90, 120)):
    """A (H, W, 3) uint8 image of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def one_template_file(folder):
    """``folder/templates.txt`` with one prompt template: keeps text encoding of 100+ names fast."""
    path = os.path.join(folder, "templates.txt")
    with open(path, "w") as f:
        f.write("a photo of a {}.\n")
    return path


class RegisteredToyDatasets:
    """A test-class mixin: ``cls.root`` holds the toy datasets (in ``cls._tmp``), registered under
    every cdam_* name for the class's tests; the default root is registered again afterwards.
    Needs detectron2."""

    @classmethod
    def setUpClass(cls):
        import cdam_d2
        from cdam_d2.data.toy import make_toy_datasets

        super().setUpClass()
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = os.path.join(cls._tmp.name, "datasets")
        make_toy_datasets(cls.root)
        cdam_d2.register_all_cdam_datasets(cls.root)

    @classmethod
    def tearDownClass(cls):
        import cdam_d2
        from cdam_d2.data.datasets import default_datasets_root

        cdam_d2.register_all_cdam_datasets(default_datasets_root())
        cls._tmp.cleanup()
        super().tearDownClass()


# ------------------------------------------------------------------------------------------ files
def truncate_half(path):
    """Keep the first half of a file, as a full disk or an interrupted copy leaves it."""
    with open(path, "rb+") as f:
        f.truncate(os.path.getsize(path) // 2)


class CreatesDirectory:
    """Unpickling this runs ``os.makedirs(path)``: proof that a loader ran code from a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def point_builtin_datasets_at(root):
    """Re-register Detectron2's builtin Cityscapes / ADE20K splits under ``root`` (the cdam_* names are
    re-registered by ``cdam_d2.register_all_cdam_datasets(root)``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.builtin import register_all_ade20k, register_all_cityscapes

    for name in list(DatasetCatalog.list()):
        if name.startswith(("ade20k_sem_seg_", "cityscapes_fine_")):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    register_all_cityscapes(root)
    register_all_ade20k(root)
