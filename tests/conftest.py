import os

from tests import helpers

# Two cores: keep intra-op threads from oversubscribing when tests spawn processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def _skipped_for(terminalreporter, reason):
    return [r for r in terminalreporter.stats.get("skipped", []) if reason in str(r.longrepr)]


def pytest_terminal_summary(terminalreporter):
    if not helpers.HAVE_DETECTRON2:
        skipped = _skipped_for(terminalreporter, helpers.DETECTRON2_SKIP_REASON)
        terminalreporter.write_line(
            f"!!! detectron2 is NOT installed: {len(skipped)} Detectron2 integration tests were SKIPPED. "
            "Install detectron2 from its official source (see README) to run them. !!!",
            red=True,
            bold=True,
        )
    cuda_skipped = _skipped_for(terminalreporter, helpers.CUDA_SKIP_REASON)
    if cuda_skipped:
        terminalreporter.write_line(
            f"!!! {len(cuda_skipped)} CUDA tests were SKIPPED (no GPU). Run them on a GPU machine: "
            "bash benchmarks/gpu_check.sh (README, section GPU). !!!",
            yellow=True,
            bold=True,
        )
    if helpers.CUDA_DRY_RUN:
        terminalreporter.write_line(
            "CDAM_D2_CUDA_DRY_RUN=1: the CUDA tests ran on the CPU (plumbing only, CUDA untested).",
            yellow=True,
        )
