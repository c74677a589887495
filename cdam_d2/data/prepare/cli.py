"""Argument and error handling shared by the ``tools/prepare_*.py`` command-line tools."""
import argparse
import os
import sys


def default_datasets_root():
    """``$DETECTRON2_DATASETS`` or ``datasets``, the root the registered datasets read from."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def make_parser(description, layout):
    """An ``ArgumentParser`` whose help shows ``layout`` verbatim, with ``--workers``."""
    parser = argparse.ArgumentParser(
        description=f"{description}\n\n{layout}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes used to convert files (default: min(8, CPU count); 1 = no pool)",
    )
    return parser


def add_root_argument(parser):
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


def report(summary, what, output_dir):
    print(f"{what}: wrote {summary.written}, already done {summary.skipped} -> {output_dir}")
