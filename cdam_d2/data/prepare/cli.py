"""Argument and error handling shared by the ``tools/prepare_*.py`` command-line tools."""
import argparse
import sys

from ...utils.cores import available_cores
from ..datasets.loader import default_datasets_root


def make_parser(description, layout):
    """An ``ArgumentParser`` whose help shows ``layout`` verbatim, with ``--workers``."""
    parser = argparse.ArgumentParser(
        description=f"{description}\n\n{layout}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, available_cores()),
        help="processes used to convert files (default: min(8, the cores this process may use); 1 = no pool)",
    )
    return parser


def add_root_argument(parser):
    """Optional positional ``root``: the folder that holds the dataset layouts."""
    parser.add_argument(
        "root",
        nargs="?",
        default=default_datasets_root(),
        help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)",
    )


def run(main, argv=None):
    """Call ``main(argv)``; report missing or malformed inputs as one clear message, exit code 1."""
    try:
        main(argv)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; re-run the command to resume", file=sys.stderr)
        sys.exit(130)


def report(summary, what, output_dir):
    """Print one line summarising a :class:`WriteSummary` (and the damaged files it replaced)."""
    print(f"{what}: wrote {summary.written}, already done {summary.skipped} -> {output_dir}")
    if summary.damaged:
        print(f"warning: {len(summary.damaged)} existing file(s) did not decode completely at the "
              f"expected size and were written again, e.g. {summary.damaged[0]}")
