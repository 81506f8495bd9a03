"""The ablation grid: cells (tiler x resampler x loss x seed), experiment files, shards."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cora_kit.config import load_yaml
from cora_kit.errors import ConfigError


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid. ``tiler`` is None when the tiler is not an axis."""

    resampler: str
    loss: str
    seed: int
    tiler: str | None = None

    @property
    def cell_id(self) -> str:
        """Folder name: ``<resampler>__<loss>__seed<k>`` (prefixed by ``<tiler>__``)."""
        parts = [self.resampler, self.loss, f"seed{self.seed}"]
        if self.tiler is not None:
            parts.insert(0, self.tiler)
        return "__".join(_safe(p) for p in parts)

    @property
    def group(self) -> tuple[str | None, str, str]:
        """The table row this cell contributes to."""
        return (self.tiler, self.resampler, self.loss)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def build_grid(
    resamplers: list[str], losses: list[str], seeds: int, tilers: list[str] | None = None
) -> list[Cell]:
    """Every combination, in a stable order (tiler, resampler, loss, seed)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1; got {seeds}")
    if not resamplers or not losses:
        raise ConfigError("the grid needs at least one resampler and one loss")
    axis = tilers or [None]
    return [
        Cell(resampler=r, loss=l, seed=s, tiler=t)
        for t in axis
        for r in resamplers
        for l in losses
        for s in range(seeds)
    ]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4); got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """A deterministic subset: cells sorted by id, every ``count``-th from ``index``.

    The shards 0..count-1 partition the grid: every cell lands in exactly one.
    """
    ordered = sorted(cells, key=lambda c: c.cell_id)
    return ordered[index::count]


class ExperimentFile(BaseModel):
    """``cora-kit bench configs/experiments/NAME.yaml``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    preset: str | None = None
    resamplers: list[str]
    losses: list[str]
    tilers: list[str] | None = None
    seeds: int = Field(3, ge=1)
    stages: list[int] = Field(default_factory=lambda: [1, 2, 3])
    baseline: str | None = None
    #: config overrides applied to every cell (same keys as a --config file)
    config: dict[str, Any] = Field(default_factory=dict)


def load_experiment(path: str | Path) -> ExperimentFile:
    """Read and validate an experiment YAML; errors name the file, line and key."""
    data, lines = load_yaml(path)
    try:
        return ExperimentFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        line = lines.get(loc[:1]) if loc else None
        where = f"{path}" + (f" line {line}" if line else "")
        raise ConfigError(f"{where}: '{'.'.join(loc)}': {err['msg']}") from None
