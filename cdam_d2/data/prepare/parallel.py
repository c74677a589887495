"""Map a function over many files with an optional process pool and a progress bar."""
import multiprocessing
import os
from typing import NamedTuple, Tuple

from tqdm import tqdm

from ...utils.files import is_complete_file


def parallel_map(function, tasks, workers=1, desc=None):
    """Return ``[function(task) for task in tasks]`` in order, showing a tqdm progress bar.

    Args:
        function: a picklable (module-level) callable taking one task.
        tasks (list): picklable task arguments.
        workers (int): number of processes; ``<= 1`` runs in this process (easier to debug).
        desc (str): progress-bar label.
    """
    tasks = list(tasks)
    progress = dict(total=len(tasks), desc=desc, unit="file", dynamic_ncols=True)
    if workers <= 1 or len(tasks) <= 1:
        return [function(task) for task in tqdm(tasks, **progress)]
    # Large chunks amortise pickling; small enough that the bar still moves.
    chunksize = max(1, min(64, len(tasks) // (workers * 16)))
    with multiprocessing.Pool(workers) as pool:
        return list(tqdm(pool.imap(function, tasks, chunksize=chunksize), **progress))


class WriteSummary(NamedTuple):
    """How many outputs a resumable writer produced now and how many were already finished.

    ``damaged`` lists the existing outputs that failed verification and were written again (they
    are counted in ``written``).
    """

    written: int
    skipped: int
    damaged: Tuple[str, ...] = ()


def _write_unless_complete(job):
    write_one, size_of, task = job
    path = task[0]
    exists = os.path.exists(path)
    if exists and is_complete_file(path, size_of(task) if size_of else None):
        return "skipped"
    write_one(task)
    return "damaged" if exists else "written"


def write_missing(write_one, tasks, workers=1, desc=None, size_of=None):
    """Run ``write_one(task)`` for every task whose output is not a complete file yet.

    Each task is a tuple whose first element is its output path. Outputs are written atomically
    (see :mod:`cdam_d2.utils.files`), so an interrupted run leaves no partial file; an
    existing output may still have been damaged later (a full disk, an interrupted copy), so each
    one is verified with :func:`~cdam_d2.utils.files.is_complete_file` (in the workers) and
    written again when it fails.

    Args:
        write_one, tasks, workers, desc: as in :func:`parallel_map`.
        size_of: optional picklable ``size_of(task) -> (H, W)``, the size an image output must have.
    Returns:
        WriteSummary
    """
    tasks = list(tasks)
    outcomes = parallel_map(_write_unless_complete, [(write_one, size_of, task) for task in tasks],
                            workers=workers, desc=desc)
    damaged = tuple(task[0] for task, outcome in zip(tasks, outcomes) if outcome == "damaged")
    skipped = outcomes.count("skipped")
    return WriteSummary(written=len(tasks) - skipped, skipped=skipped, damaged=damaged)
