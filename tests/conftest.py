import os

from tests.d2_guard import HAVE_DETECTRON2, SKIP_REASON

# Two cores: keep intra-op threads from oversubscribing when tests spawn processes.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_terminal_summary(terminalreporter):
    if HAVE_DETECTRON2:
        return
    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if SKIP_REASON in str(r.longrepr)
    ]
    terminalreporter.write_line(
        f"!!! detectron2 is NOT installed: {len(skipped)} Detectron2 integration tests were SKIPPED. "
        "Install detectron2 from its official source (see README) to run them. !!!",
        red=True,
        bold=True,
    )
