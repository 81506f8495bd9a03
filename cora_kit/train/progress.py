"""Progress display: a rich bar per stage on a TTY, plain one-line logs otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


class StageProgress:
    """Shows one stage's optimizer steps with loss, lr, throughput and ETA.

    ``enabled=False`` (non-zero DDP ranks, tests) prints nothing. When ``stream`` is not a
    TTY, one line is printed per epoch (and at the end) instead of a live bar.
    """

    def __init__(
        self, stage: int, total_steps: int, *, enabled: bool = True, stream: TextIO | None = None,
        force_plain: bool = False,
    ) -> None:
        self.stage = stage
        self.total = max(total_steps, 1)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and not force_plain
        self._progress: Any = None
        self._task: Any = None
        self._start = time.perf_counter()
        self._items = 0
        self.last: dict[str, float] = {}

    def __enter__(self) -> StageProgress:
        self._start = time.perf_counter()
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn(f"stage {self.stage}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=Console(file=self.stream), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(f"stage {self.stage}", total=self.total, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def throughput(self) -> float:
        """Samples per second since the stage (re)started."""
        dt = time.perf_counter() - self._start
        return self._items / dt if dt > 0 else 0.0

    def update(self, step: int, items: int, metrics: dict[str, float]) -> None:
        """After optimizer step ``step`` (1-based) that consumed ``items`` samples."""
        self._items += items
        self.last = {**metrics, "samples_per_s": self.throughput()}
        if self._progress is not None:
            info = f"loss {metrics.get('loss', float('nan')):.4f} lr {metrics.get('lr', 0):.2e} {self.last['samples_per_s']:.1f}/s"
            self._progress.update(self._task, completed=step, info=info)

    def epoch_end(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        if self.enabled and not self.tty:
            elapsed = time.perf_counter() - self._start
            eta = elapsed / max(step, 1) * (self.total - step)
            line = (f"stage {self.stage} epoch {epoch} step {step}/{self.total} {_fmt(metrics)}"
                    f" {self.throughput():.1f} samples/s elapsed {elapsed:.0f}s eta {eta:.0f}s")
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, file=self.stream, flush=True)


__all__ = ["StageProgress"]
