"""``cora-kit bench --jobs N``: a grid's cells N at a time, one process per shard.

The small models of the tiny preset keep one CPU core busier than two threads keep two
(measured on the 2-core development machine: a Stage-2 step takes 157 ms on one thread and
107 ms on two, so two one-thread cells finish 1.4x sooner than two cells in turn). Each job
is ``cora-kit bench ... --shard i/N`` in a child process with ``cores // N`` threads
(``OMP_NUM_THREADS``), its output in ``<bench>/jobs/shard-<i>-of-<N>.log``; the shards share
the grid's folder and feature cache, and the parent builds the tables when all have ended.
The data every cell reads is prepared once before the first job starts (two jobs never
generate one synthetic set at the same time).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cora_kit.bench.runner import is_finished

#: seconds between looks at the cells the jobs finished
POLL_S = 5.0


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int) -> int:
    """``cores() // jobs``, at least 1."""
    return max(1, cores() // jobs)


def job_env(jobs: int) -> dict[str, str]:
    """The environment of one job: ``threads_per_job`` threads for torch/OpenMP."""
    threads = str(threads_per_job(jobs))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_jobs(
    args: Sequence[str], bench_dir: Path, jobs: int, cell_ids: Sequence[str],
    on_cell: Callable[[str, str], None] | None = None,
) -> list[int]:
    """Run ``cora-kit bench run <args> --shard i/jobs`` for i < ``jobs`` at once; returns
    their exit codes. ``on_cell(cell_id, "ok" | "failed")`` is called as cells of
    ``cell_ids`` end. Ctrl-C stops every job (finished cells stay; a re-run skips them)."""
    logs = bench_dir / "jobs"
    logs.mkdir(parents=True, exist_ok=True)
    env = job_env(jobs)
    started = time.time()
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    try:
        for i in range(jobs):
            log = open(logs / f"shard-{i}-of-{jobs}.log", "wb")  # noqa: SIM115 (closed below)
            files.append(log)
            cmd = [sys.executable, "-m", "cora_kit", "bench", "run", *args, "--shard", f"{i}/{jobs}"]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        seen = {c for c in cell_ids if is_finished(bench_dir / "cells" / c)}
        while any(p.poll() is None for p in procs):
            time.sleep(POLL_S)
            seen |= _report(bench_dir, cell_ids, seen, started, on_cell)
        _report(bench_dir, cell_ids, seen, started, on_cell)
        return [p.returncode for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        for f in files:
            f.close()


def _ended(cell_dir: Path, since: float) -> bool:
    """Finished, or failed after ``since`` (an older error.json is a failure a job retries)."""
    error = cell_dir / "error.json"
    return is_finished(cell_dir) or (error.is_file() and error.stat().st_mtime >= since)


def _report(bench_dir: Path, cell_ids: Sequence[str], seen: set[str], since: float,
            on_cell: Callable[[str, str], None] | None) -> set[str]:
    new = {c for c in cell_ids if c not in seen and _ended(bench_dir / "cells" / c, since)}
    for c in sorted(new, key=list(cell_ids).index):
        if on_cell is not None:
            on_cell(c, "ok" if is_finished(bench_dir / "cells" / c) else "failed")
    return new


__all__ = ["cores", "job_env", "run_jobs", "threads_per_job"]
