"""Map a function over many files with an optional process pool and a progress bar."""
import multiprocessing
import os
from typing import NamedTuple

from tqdm import tqdm


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
    """How many outputs a resumable writer produced now and how many were already finished."""

    written: int
    skipped: int


def write_missing(write_one, tasks, workers=1, desc=None):
    """Run ``write_one(task)`` for every task whose output does not exist yet.

    Each task is a tuple whose first element is its output path. Outputs are written atomically
    (see :mod:`cdam_d2.data.prepare.files`), so an existing path is a finished file and is skipped.

    Returns:
        WriteSummary
    """
    pending = [task for task in tasks if not os.path.exists(task[0])]
    parallel_map(write_one, pending, workers=workers, desc=desc)
    return WriteSummary(written=len(pending), skipped=len(tasks) - len(pending))
