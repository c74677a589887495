"""The table of the training-free segmentation papers: methods × the 8 benchmarks, mIoU per cell.

``tools/benchmark_table.py`` is the command line; docs/BENCHMARK_TABLE.md is the user's guide.
Each (method, benchmark) cell is one ``--eval-only`` run of :func:`cdam_d2.engine.cli.main` on the
first test dataset of the method's config for that benchmark. Its results are written atomically
to ``<output-dir>/<method>/<benchmark>/results.json`` with the hash of the full config (file,
``_BASE_`` files and opts); a later run reads a file whose hash matches instead of evaluating again.
"""
import argparse
import contextlib
import csv
import glob
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..utils.files import prepare_output_dir, save_json, write_atomically
from ..engine import cli


@dataclass(frozen=True)
class Benchmark:
    key: str  # as in config file names: configs/cdam_<key>.yaml, configs/peers/<peer>/<key>[_cdam].yaml
    column: str  # the papers' column title
    dataset: str  # the registered test split
    prepare_hint: str = ""  # for Detectron2's builtin splits, whose loaders name no preparation tool


BENCHMARKS = (
    Benchmark("voc21", "VOC21", "cdam_voc21_sem_seg_val"),
    Benchmark("context60", "Context60", "cdam_context60_sem_seg_val"),
    Benchmark("coco_object", "COCO-Object", "cdam_coco_object_sem_seg_val"),
    Benchmark("voc20", "VOC20", "cdam_voc20_sem_seg_val"),
    Benchmark("context59", "Context59", "cdam_context59_sem_seg_val"),
    Benchmark("coco_stuff171", "COCO-Stuff", "cdam_coco_stuff171_sem_seg_val"),
    Benchmark("cityscapes19", "Cityscapes", "cityscapes_fine_sem_seg_val",
              "run `python tools/prepare_cityscapes.py $DETECTRON2_DATASETS`"),
    Benchmark("ade20k150", "ADE20K", "ade20k_sem_seg_val",
              "run `python tools/prepare_ade20k.py $DETECTRON2_DATASETS`"),
)
BY_DATASET = {benchmark.dataset: benchmark for benchmark in BENCHMARKS}
AVERAGE = "Average"
COLUMNS = tuple(benchmark.column for benchmark in BENCHMARKS) + (AVERAGE,)
DEFAULT_OUTPUT_DIR = "output/benchmark_table"
RESULTS_FILE = "results.json"
# Each --method spec form and the config file it reads for a benchmark, relative to --configs-root; <dataset>
# is the benchmark key. A benchmark without that file is n/a.
SPEC_FILES = (
    ("cdam", "cdam_<dataset>.yaml", "CDAM under its own protocol"),
    ("variants:<base>", "variants/cdam_<dataset>_<base>.yaml", "CDAM on that base"),
    ("variants:<base>_baseline", "variants/cdam_<dataset>_<base>_baseline.yaml", "the base alone"),
    ("peers/<peer>", "peers/<peer>/<dataset>.yaml", "the peer alone under its own protocol"),
    ("peers/<peer>:cdam", "peers/<peer>/<dataset>_cdam.yaml", "CDAM on top of the peer, same protocol"),
)
METHOD_FORMS = ", ".join(form for form, _, _ in SPEC_FILES) + " or NAME=FILE[,FILE...]"

DONE, MISSING, NOT_AVAILABLE = "done", "missing", "n/a"


class BenchmarkTableError(ValueError):
    """Bad input: an unknown method, a config without a test dataset or with one outside the table."""


@dataclass(frozen=True)
class Method:
    """A table row: its config files, each with the benchmark its name promises (None: any)."""

    name: str
    configs: Tuple[Tuple[Optional[str], str], ...]


@dataclass(frozen=True)
class Cell:
    """One evaluation: a method's config for one benchmark."""

    method: str
    benchmark: Benchmark
    config_file: str
    config_hash: str
    output_dir: str

    @property
    def results_file(self):
        return os.path.join(self.output_dir, RESULTS_FILE)


@dataclass
class Outcome:
    """What the table shows for one cell."""

    status: str  # DONE, MISSING (the dataset's files are not there) or NOT_AVAILABLE (no config)
    miou: Optional[float] = None
    reason: str = ""  # MISSING: the loader's error
    results_file: str = ""
    config_file: str = ""


@dataclass
class Table:
    """Rows in the order the methods were given: method name -> benchmark key -> outcome."""

    rows: Dict[str, Dict[str, Outcome]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Methods


def method_from_spec(method_spec, configs_root):
    """A :class:`Method` from a spec of ``SPEC_FILES`` (config files under ``configs_root``; a benchmark
    without a file is n/a) or ``NAME=FILE[,FILE...]`` (each file's column is its ``DATASETS.TEST[0]``)."""
    if "=" in method_spec:
        name, files = method_spec.split("=", 1)
        paths = [path for path in files.split(",") if path]
        if not name or not paths:
            raise BenchmarkTableError(f"Method {method_spec!r}: give NAME=FILE[,FILE...]")
        for path in paths:
            if not os.path.isfile(path):
                raise BenchmarkTableError(f"Method {name!r}: config file {path!r} does not exist")
        return Method(name, tuple((None, path) for path in paths))
    template = _template_of(method_spec, configs_root)
    paths = {b.key: os.path.join(configs_root, template.replace("<dataset>", b.key)) for b in BENCHMARKS}
    configs = tuple((key, path) for key, path in paths.items() if os.path.isfile(path))
    if not configs:
        raise BenchmarkTableError(
            f"Unknown method {method_spec!r}: no config file {os.path.join(configs_root, template)} exists"
            f"{_suggestion(method_spec, configs_root)}")
    return Method(method_spec, configs)


def _template_of(method_spec, configs_root):
    """The config file of a method spec relative to the configs root, <dataset> for a benchmark key."""
    variant = re.fullmatch(r"variants:([\w.-]+)", method_spec)
    peer = re.fullmatch(r"peers/([\w.-]+)(:cdam)?", method_spec)
    if method_spec == "cdam":
        return "cdam_<dataset>.yaml"
    if variant:
        return f"variants/cdam_<dataset>_{variant[1]}.yaml"
    if peer:
        return f"peers/{peer[1]}/<dataset>{'_cdam' if peer[2] else ''}.yaml"
    if os.path.isdir(method_spec):
        raise BenchmarkTableError(f"Method {method_spec!r} is a folder: --config-dir {method_spec} makes a row "
                                  f"of its *<dataset>*.yaml files (one per benchmark); --method takes {METHOD_FORMS}"
                                  f"{_suggestion(method_spec, configs_root)}")
    raise BenchmarkTableError(f"Unknown method {method_spec!r}: give {METHOD_FORMS}, or --config-dir DIR"
                              f"{_suggestion(method_spec, configs_root)}")


def _suggestion(method_spec, configs_root):
    """"; did you mean ..." with the specs whose configs exist under ``configs_root`` and whose name is the
    last word of ``method_spec`` (without a ``_cdam`` ending), or "" when there is none."""
    name = re.split(r"[/:]", method_spec.rstrip("/"))[-1]
    name = name[:-len("_cdam")] if name.endswith("_cdam") else name
    candidates = [
        (f"peers/{name}", os.path.join("peers", name, "*.yaml")),
        (f"peers/{name}:cdam", os.path.join("peers", name, "*_cdam.yaml")),
        (f"variants:{name}", os.path.join("variants", f"cdam_*_{name}.yaml")),
    ]
    found = [candidate for candidate, pattern in candidates if candidate != method_spec and name
             and glob.glob(os.path.join(glob.escape(configs_root), pattern))]
    if not found:
        return ""
    return f"; did you mean {', '.join(found[:-1]) + ' or ' if len(found) > 1 else ''}{found[-1]}?"


def method_from_config_dir(directory):
    """A :class:`Method` named after ``directory``, whose config for a benchmark is its one file
    matching ``*<key>*.yaml``."""
    if not os.path.isdir(directory):
        raise BenchmarkTableError(f"--config-dir {directory!r} is not a directory")
    configs = []
    for benchmark in BENCHMARKS:
        matches = sorted(glob.glob(os.path.join(glob.escape(directory), f"*{benchmark.key}*.yaml")))
        if len(matches) > 1:
            raise BenchmarkTableError(
                f"--config-dir {directory!r}: {len(matches)} files match *{benchmark.key}*.yaml "
                f"({', '.join(os.path.basename(path) for path in matches)}); keep one per benchmark in the "
                "folder, or name the files with --method NAME=FILE[,FILE...] (for a configs/peers/<peer> "
                "folder: --method peers/<peer> for <dataset>.yaml, peers/<peer>:cdam for <dataset>_cdam.yaml)")
        configs += [(benchmark.key, path) for path in matches]
    if not configs:
        raise BenchmarkTableError(
            f"--config-dir {directory!r}: no file matches *<dataset>*.yaml for any of "
            f"{', '.join(benchmark.key for benchmark in BENCHMARKS)}")
    return Method(os.path.basename(os.path.normpath(directory)), tuple(configs))


# ---------------------------------------------------------------------------------------------
# Planning: every config is read (and every bad input reported) before the first evaluation


def plan_cells(methods, opts, output_dir, allow_unsafe_yaml=False):
    """``{method name: {benchmark key: Cell}}`` for ``methods``, each config read with ``opts``."""
    plan, folders = {}, {}  # output folder -> method name
    for method in methods:
        folder = _folder_name(method.name)
        if folder in folders:
            raise BenchmarkTableError(
                f"Method {method.name!r} is given twice" if folders[folder] == method.name else
                f"Methods {folders[folder]!r} and {method.name!r} would share the folder {folder!r}")
        folders[folder] = method.name
        plan[method.name] = _plan_method(method, opts, os.path.join(output_dir, folder), allow_unsafe_yaml)
    return plan


def _folder_name(method_name):
    """The method's folder under the output dir: ``variants:sclip`` -> ``variants-sclip``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", method_name).strip("-.") or "method"


def _plan_method(method, opts, method_dir, allow_unsafe_yaml):
    cells = {}
    for expected, config_file in method.configs:
        try:
            cfg = cli.load_cfg(config_file, opts, allow_unsafe_yaml=allow_unsafe_yaml)[0]
        except (KeyError, AssertionError, ValueError, OSError) as error:
            # yacs: KeyError for an unknown key in a file, AssertionError in the opts, ValueError for
            # a wrong type; UnsafeConfigError is a ValueError; OSError for a missing _BASE_ file.
            raise BenchmarkTableError(f"{config_file}: {error}") from None
        benchmark = _benchmark_of(cfg, config_file)
        if expected is not None and benchmark.key != expected:
            raise BenchmarkTableError(
                f"{config_file}: its name says {expected}, but it evaluates {benchmark.dataset} "
                f"({benchmark.column})")
        if benchmark.key in cells:
            raise BenchmarkTableError(
                f"Method {method.name!r}: {cells[benchmark.key].config_file} and {config_file} both "
                f"evaluate {benchmark.dataset} ({benchmark.column})")
        cfg.merge_from_list(_dataset_opts(benchmark))
        cells[benchmark.key] = Cell(method.name, benchmark, config_file,
                                    hashlib.sha256(cfg.dump().encode()).hexdigest(),
                                    os.path.join(method_dir, benchmark.key))
    return cells


def _benchmark_of(cfg, config_file):
    """The benchmark of the config's first test dataset."""
    if not cfg.DATASETS.TEST:
        raise BenchmarkTableError(f"{config_file}: DATASETS.TEST is empty; a table cell evaluates its "
                                  "first dataset")
    dataset = cfg.DATASETS.TEST[0]
    if dataset not in BY_DATASET:
        known = ", ".join(f"{b.dataset} ({b.column})" for b in BENCHMARKS)
        raise BenchmarkTableError(f"{config_file}: DATASETS.TEST[0] is {dataset!r}, none of the table's "
                                  f"benchmarks: {known}")
    return BY_DATASET[dataset]


def _dataset_opts(benchmark):
    """The cell evaluates this one dataset, even if the config lists more."""
    return ["DATASETS.TEST", repr((benchmark.dataset,))]


# ---------------------------------------------------------------------------------------------
# Running the cells


def read_finished(cell):
    """``(mIoU, None)`` from the cell's finished results file, else ``(None, why)``: why is None
    when there is no file, else what makes it unusable (damaged, or made with another config)."""
    try:
        with open(cell.results_file) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None, None
    except (ValueError, UnicodeDecodeError):
        return None, "damaged"
    if not isinstance(record, dict) or not isinstance(record.get("mIoU"), (int, float)):
        return None, "damaged"
    if record.get("config_hash") != cell.config_hash or record.get("dataset") != cell.benchmark.dataset:
        return None, "made with another config"
    return float(record["mIoU"]), None


def missing_reason(benchmark):
    """Why the benchmark's files cannot be loaded (its loader's FileNotFoundError), or None."""
    try:
        DatasetCatalog.get(benchmark.dataset)
    except FileNotFoundError as error:
        reason = " ".join(str(error).split())  # one line, for the footnote
        if benchmark.prepare_hint:
            reason += f" (to create the files, {benchmark.prepare_hint})"
        return reason
    return None


def evaluate(cell, opts, num_gpus=1, allow_unsafe_yaml=False):
    """Evaluate the cell through :func:`cdam_d2.engine.cli.main` (``num_gpus`` processes through
    the package's launcher) and return its mIoU, read back from the results file it wrote."""
    prepare_output_dir(cell.output_dir)  # clears temporary files of interrupted runs
    flags = ["--config-file", cell.config_file, "--eval-only", "--num-gpus", str(num_gpus)]
    args = cli.argument_parser().parse_args(flags + ([cli.UNSAFE_CONFIG_FLAG] if allow_unsafe_yaml else []))
    args.opts = [*opts, *_dataset_opts(cell.benchmark), "OUTPUT_DIR", cell.output_dir]
    record = {"method": cell.method, "benchmark": cell.benchmark.key, "dataset": cell.benchmark.dataset,
              "config_file": cell.config_file, "config_hash": cell.config_hash, "opts": list(opts)}
    cli.launch(evaluate_and_save, num_gpus, dist_url="auto", args=(args, record, cell.results_file))
    miou, problem = read_finished(cell)
    if miou is None:
        raise RuntimeError(f"{cell.results_file}: the evaluation left no usable results "
                           f"({problem or 'no file'})")
    return miou


def evaluate_and_save(args, record, results_file):
    """One evaluation with ``args`` (in each process when there are several); the main process
    writes ``record`` with the results atomically. Module-level so that spawned workers find it."""
    start = time.perf_counter()
    # Detectron2 logs to stdout; the tool's stdout is the table.
    with _evaluation_log_handlers(), contextlib.redirect_stdout(sys.stderr):
        results = cli.main(args)
    if comm.is_main_process():
        if "mIoU" not in results.get("sem_seg", {}):
            raise RuntimeError(f"{args.config_file}: the evaluation gave no sem_seg mIoU ({sorted(results)})")
        save_json({**record, "mIoU": results["sem_seg"]["mIoU"], "results": results,
                   "seconds": round(time.perf_counter() - start, 3)}, results_file)


@contextlib.contextmanager
def _evaluation_log_handlers():
    """Remove the log handlers an evaluation adds when it ends. Detectron2's ``setup_logger`` adds
    a console and a file handler per OUTPUT_DIR: kept, every later cell would print each line once
    per earlier cell and write into the earlier cells' log.txt."""
    before = {logger: set(logger.handlers) for logger in _all_loggers()}
    try:
        yield
    finally:
        for logger in _all_loggers():
            for handler in set(logger.handlers) - before.get(logger, set()):
                logger.removeHandler(handler)
                handler.close()
        setup_logger.cache_clear()  # a later evaluation into the same folder sets its handlers up again


def _all_loggers():
    named = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(logger for logger in named if isinstance(logger, logging.Logger))]


def print_progress(message):
    """Progress goes to stderr, so that stdout carries the table only."""
    print(message, file=sys.stderr, flush=True)


def run_table(methods, opts=(), output_dir=DEFAULT_OUTPUT_DIR, num_gpus=1, allow_unsafe_yaml=False,
              progress=print_progress):
    """Fill the :class:`Table` of ``methods``: read each finished cell, evaluate the others whose
    dataset is present, report the rest as missing. Interrupting it keeps the finished cells."""
    opts = list(opts)
    plan = plan_cells(methods, opts, output_dir, allow_unsafe_yaml)
    total = sum(len(cells) for cells in plan.values())
    progress(f"benchmark table: {len(plan)} method(s) x {len(BENCHMARKS)} benchmarks, {total} cell(s) with a "
             f"config; results under {output_dir}")
    table, counts, index, start = Table(), {"evaluated": 0, "read": 0, MISSING: 0}, 0, time.perf_counter()
    for method, cells in plan.items():
        table.rows[method] = {}
        for benchmark in BENCHMARKS:
            cell = cells.get(benchmark.key)
            if cell is None:
                table.rows[method][benchmark.key] = Outcome(NOT_AVAILABLE)
                continue
            index += 1
            prefix = f"[{index}/{total}] {method} · {benchmark.column}: "
            outcome, how = _run_cell(cell, opts, num_gpus, allow_unsafe_yaml,
                                     lambda message, prefix=prefix: progress(prefix + message))
            counts[how] += 1
            table.rows[method][benchmark.key] = outcome
    progress(f"benchmark table: {counts['evaluated']} evaluated, {counts['read']} read from finished "
             f"results, {counts[MISSING]} missing, in {time.perf_counter() - start:.1f} s")
    return table


def _run_cell(cell, opts, num_gpus, allow_unsafe_yaml, progress):
    """The cell's outcome and how it was obtained ("read", "evaluated" or MISSING)."""
    miou, problem = read_finished(cell)
    if miou is not None:
        progress(f"{miou:.1f}, read from {cell.results_file}")
        return Outcome(DONE, miou, results_file=cell.results_file, config_file=cell.config_file), "read"
    reason = missing_reason(cell.benchmark)
    if reason:
        progress(f"missing data: {reason}")
        return Outcome(MISSING, reason=reason, config_file=cell.config_file), MISSING
    progress(f"evaluating {cell.config_file} on {cell.benchmark.dataset}"
             + (f" (the results file is {problem})" if problem else ""))
    start = time.perf_counter()
    miou = evaluate(cell, opts, num_gpus, allow_unsafe_yaml)
    progress(f"mIoU {miou:.1f} in {time.perf_counter() - start:.1f} s")
    return Outcome(DONE, miou, results_file=cell.results_file, config_file=cell.config_file), "evaluated"


# ---------------------------------------------------------------------------------------------
# The table as Markdown, CSV and JSON


def averages(outcomes):
    """``(average, average of present, number present)``: the average over the 8 benchmarks only
    when all 8 have a number, else None; the average over those that have one (None if none)."""
    values = [outcomes[b.key].miou for b in BENCHMARKS if outcomes[b.key].status == DONE]
    present = sum(values) / len(values) if values else None
    return (present if len(values) == len(BENCHMARKS) else None), present, len(values)


def _cell_text(outcome):
    return f"{outcome.miou:.1f}" if outcome.status == DONE else outcome.status


def to_markdown(table):
    """The table with one decimal, "—" as the average of an incomplete row, and footnotes: the
    reason of each missing benchmark, the average over the present benchmarks of incomplete rows."""
    missing = {}  # benchmark key -> footnote number
    notes = []
    for outcomes in table.rows.values():
        for benchmark in BENCHMARKS:
            outcome = outcomes[benchmark.key]
            if outcome.status == MISSING and benchmark.key not in missing:
                notes.append(f"{benchmark.column}: data missing. {outcome.reason}")
                missing[benchmark.key] = len(notes)
    lines = ["| Method | " + " | ".join(COLUMNS) + " |", "| :-- |" + " --: |" * len(COLUMNS)]
    for method, outcomes in table.rows.items():
        cells = [_marked_cell_text(outcomes[b.key], missing.get(b.key)) for b in BENCHMARKS]
        average, present, count = averages(outcomes)
        if average is not None:
            cells.append(f"{average:.1f}")
        elif present is None:
            cells.append("—")
        else:
            notes.append(f"{method}: {count} of {len(BENCHMARKS)} benchmarks; their average is "
                         f"{present:.1f}.")
            cells.append(f"— [{len(notes)}]")
        lines.append(f"| {_escape(method)} | " + " | ".join(cells) + " |")
    lines += [""] + [f"[{number}] {note}" for number, note in enumerate(notes, 1)]
    if any(o.status == NOT_AVAILABLE for outcomes in table.rows.values() for o in outcomes.values()):
        lines.append(f"{NOT_AVAILABLE}: the method has no config for this benchmark.")
    return "\n".join(lines).rstrip() + "\n"


def _marked_cell_text(outcome, note):
    """The cell's text, with the footnote ``note`` of its benchmark if the cell is missing (another
    row may have read a finished result of that benchmark before its data went away)."""
    return _cell_text(outcome) + (f" [{note}]" if outcome.status == MISSING else "")


def _escape(text):
    return text.replace("|", "\\|")


def to_csv(table):
    """The Markdown table's cells without footnote marks, plus the average of the present benchmarks
    and their number."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Method", *COLUMNS, "Average of present", "Present"])
    for method, outcomes in table.rows.items():
        average, present, count = averages(outcomes)
        writer.writerow([method, *(_cell_text(outcomes[b.key]) for b in BENCHMARKS),
                         "—" if average is None else f"{average:.1f}",
                         "" if present is None else f"{present:.1f}", count])
    return out.getvalue()


def to_json(table):
    """Every cell at full precision with its status, results file, config and missing reason; lists
    keep the table's order (the JSON is written with sorted keys)."""
    rows = []
    for method, outcomes in table.rows.items():
        average, present, count = averages(outcomes)
        cells = [{"column": b.column, "benchmark": b.key, "dataset": b.dataset,
                  "status": outcomes[b.key].status, "mIoU": outcomes[b.key].miou,
                  "reason": outcomes[b.key].reason, "results_file": outcomes[b.key].results_file,
                  "config_file": outcomes[b.key].config_file}
                 for b in BENCHMARKS]
        rows.append({"method": method, "cells": cells, "average": average, "average_of_present": present,
                     "present": count})
    return {"columns": list(COLUMNS), "rows": rows}


def write_outputs(table, output_dir, csv_file=None, json_file=None):
    """table.md, table.csv and table.json under ``output_dir`` (and the CSV / JSON also at the
    given paths), each written atomically. Returns the Markdown."""
    os.makedirs(output_dir, exist_ok=True)
    markdown, comma_separated, as_json = to_markdown(table), to_csv(table), to_json(table)
    _save_text(markdown, os.path.join(output_dir, "table.md"))
    for path in filter(None, (os.path.join(output_dir, "table.csv"), csv_file)):
        _save_text(comma_separated, path)
    for path in filter(None, (os.path.join(output_dir, "table.json"), json_file)):
        save_json(as_json, path)
    return markdown


def _save_text(text, path):
    def write(temp_path):
        with open(temp_path, "w", newline="") as f:
            f.write(text)

    write_atomically(path, write)


# ---------------------------------------------------------------------------------------------
# Command line


def _rows_help():
    """The --help epilog: how each row form maps to config files."""
    width = max(len(form) for form, _, _ in SPEC_FILES) + len("--method ")
    lines = [f"  {'--method ' + form:<{width}}  CONFIGS_ROOT/{path}: {what}" for form, path, what in SPEC_FILES]
    lines += [f"  {'--method NAME=FILE,...':<{width}}  the files given; each goes to the column of its "
              "DATASETS.TEST[0]",
              f"  {'--config-dir DIR':<{width}}  per benchmark, the one file DIR/*<dataset>*.yaml (two matches "
              "are an error); the row is named after DIR"]
    keys = ", ".join(benchmark.key for benchmark in BENCHMARKS)
    return ("rows (one per --method or --config-dir, in the order given):\n" + "\n".join(lines)
            + f"\n<dataset> is a benchmark key: {keys}. A benchmark without a file is n/a. CONFIGS_ROOT is "
              "--configs-root; it is not a row.")


def build_parser(default_configs_root):
    parser = argparse.ArgumentParser(
        description="Evaluate methods on the 8 benchmarks of training-free open-vocabulary "
                    "segmentation and print the papers' table (Markdown on stdout; table.md/.csv/.json "
                    "under --output-dir). Finished cells are read, not evaluated again. "
                    "See docs/BENCHMARK_TABLE.md.",
        epilog=_rows_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", dest="methods", action="append", type=lambda method_spec: ("spec", method_spec),
                        metavar="SPEC", help=f"a table row, repeatable: {METHOD_FORMS} (files: below)")
    parser.add_argument("--config-dir", dest="methods", action="append", type=lambda path: ("dir", path),
                        metavar="DIR", help="a table row named after DIR: per benchmark its one file matching "
                                            "*<dataset>*.yaml; repeatable")
    parser.add_argument("--configs-root", default=default_configs_root, metavar="CONFIGS_ROOT",
                        help="the folder under which --method specs find their config files; not a row, and "
                             "not used by --config-dir (default: %(default)s)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="default: %(default)s")
    parser.add_argument("--csv", metavar="FILE", help="also write the CSV table here")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON table here")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per evaluation, through Detectron2's launcher (one machine)")
    cli.add_unsafe_config_flag(parser)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config changes for every cell; last on the command line")
    return parser


def main(argv=None, default_configs_root="configs"):
    """Parse ``argv``, fill the table, write it and print the Markdown; returns the :class:`Table`."""
    parser = build_parser(default_configs_root)
    args = parser.parse_args(argv)
    if not args.methods:
        parser.error("give at least one --method or --config-dir")
    if len(args.opts) % 2:
        parser.error(f"--opts takes KEY VALUE pairs, got an odd number of words: {args.opts}")
    try:
        methods = [method_from_config_dir(value) if kind == "dir" else
                   method_from_spec(value, args.configs_root) for kind, value in args.methods]
        table = run_table(methods, args.opts, args.output_dir, args.num_gpus, args.allow_unsafe_config)
    except BenchmarkTableError as error:
        parser.error(str(error))
    print(write_outputs(table, args.output_dir, args.csv, args.json), end="")
    return table
