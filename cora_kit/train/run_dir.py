"""The ``runs/<name>/`` layout (DESIGN.md section 7)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cora_kit.errors import DataError
from cora_kit.fs import append_line, read_lines_tolerant, write_text_atomic


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder. Only DDP rank 0 writes (``writer=False`` elsewhere)."""

    root: Path
    writer: bool = True

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def diagnostics(self) -> Path:
        return self.root / "diagnostics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def references(self) -> Path:
        return self.root / "references.jsonl"

    @property
    def scores(self) -> Path:
        return self.root / "scores.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.md"

    def stage(self, k: int) -> Path:
        return self.root / f"stage{k}"

    def prepare(self) -> None:
        """Create the folder; remove the temp files of writes a killed attempt left (the
        run lock is held: no one else writes here)."""
        if self.writer:
            self.root.mkdir(parents=True, exist_ok=True)
            for tmp in self.root.glob(".*.tmp"):
                if tmp.is_file():
                    tmp.unlink(missing_ok=True)

    def write_json(self, path: Path, obj: Any) -> None:
        if self.writer:
            write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")

    def write_text(self, path: Path, text: str) -> None:
        if self.writer:
            write_text_atomic(path, text)

    def write_jsonl(self, path: Path, rows: list[dict[str, Any]]) -> None:
        if self.writer:
            write_text_atomic(path, "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in rows))

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl`` as one ``write`` (a kill never leaves half a
        row behind a complete one; see ``truncate_metrics`` for a torn last row)."""
        if self.writer:
            append_line(self.metrics, json.dumps(_jsonable(row)))

    def metric_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(line, row) of ``metrics.jsonl``; a torn last line (a kill mid-append) is dropped
        with a ``RuntimeWarning``, an invalid line elsewhere is a ``DataError`` naming it."""
        if not self.metrics.is_file():
            return []
        out = []
        for n, line in enumerate(read_lines_tolerant(self.metrics), start=1):
            try:
                out.append((line, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{self.metrics}: line {n}: invalid JSON ({exc.msg})") from None
        return out

    def truncate_metrics(self, stage: int, after_step: int) -> None:
        """On resume: keep the rows logged up to ``stage``'s checkpoint ``after_step`` (0:
        the stage restarts), drop later ones and a torn last line."""
        if not self.writer or not self.metrics.is_file():
            return
        keep = []
        for line, row in self.metric_rows():
            if row.get("stage") == stage and int(row.get("step", 0)) > after_step:
                continue
            if row.get("stage", 0) > stage:
                continue
            keep.append(line + "\n")
        write_text_atomic(self.metrics, "".join(keep))


__all__ = ["RunDir"]
