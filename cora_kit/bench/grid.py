"""The ablation grid: cells (tiler x resampler x loss x seed), experiment files, shards.

An axis entry is a plugin choice ``[dist:]name[:key=value...]`` (``cora_kit.plugin_options``):
``vicreg:variant=batchwise`` and ``vicreg:variant=pairwise`` are two rows of one grid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from cora_kit.config import ConfigLayer, load_yaml
from cora_kit.errors import ConfigError
from cora_kit.plugin_options import choice_from_value, folder_name, parse_choice


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid: plugin choice labels (``[dist:]name[:k=v...]``) and a
    seed. ``tiler`` is None when the tiler is not an axis."""

    resampler: str
    loss: str
    seed: int
    tiler: str | None = None

    @property
    def cell_id(self) -> str:
        """Folder name: ``<resampler>__<loss>__seed<k>`` (prefixed by ``<tiler>__``), each
        label through ``folder_name`` (plain names unchanged, ``dist:name`` -> ``dist+name``,
        ``vicreg:variant=pairwise`` -> ``vicreg+variant=pairwise``): unambiguous."""
        parts = [self.resampler, self.loss, f"seed{self.seed}"]
        if self.tiler is not None:
            parts.insert(0, self.tiler)
        return "__".join(folder_name(p) for p in parts)

    @property
    def group(self) -> tuple[str | None, str, str]:
        """The table row this cell contributes to."""
        return (self.tiler, self.resampler, self.loss)


def build_grid(
    resamplers: list[str], losses: list[str], seeds: int, tilers: list[str] | None = None
) -> list[Cell]:
    """Every combination, in a stable order (tiler, resampler, loss, seed). Entries are
    choice texts; each becomes its canonical label; a repeated entry is an error."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1; got {seeds}")
    if not resamplers or not losses:
        raise ConfigError("the grid needs at least one resampler and one loss")
    resamplers = _labels(resamplers, "--resamplers")
    losses = _labels(losses, "--losses")
    axis: list[str | None] = list(_labels(tilers, "--tilers")) if tilers else [None]
    return [
        Cell(resampler=r, loss=l, seed=s, tiler=t)
        for t in axis
        for r in resamplers
        for l in losses
        for s in range(seeds)
    ]


def _labels(entries: list[str], flag: str) -> list[str]:
    labels = [parse_choice(e, flag).label for e in entries]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise ConfigError(f"{flag}: {repeated[0]!r} is given twice")
    return labels


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
    #: each a choice text (``vicreg:variant=pairwise``) or ``{name: ..., options: {...}}``
    resamplers: list[str | dict[str, Any]]
    losses: list[str | dict[str, Any]]
    tilers: list[str | dict[str, Any]] | None = None
    seeds: int = Field(3, ge=1)
    stages: list[int] = Field(default_factory=lambda: [1, 2, 3])
    baseline: str | None = None
    #: config overrides applied to every cell (same keys as a --config file)
    config: dict[str, Any] = Field(default_factory=dict)
    #: where it was read from and the line of every key (for errors); set by load_experiment
    _source: str = PrivateAttr("experiment")
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    def axis(self, key: str) -> list[str] | None:
        """The choice labels of axis ``key`` (resamplers, losses, tilers)."""
        entries = getattr(self, key)
        if entries is None:
            return None
        line = self._lines.get((key,))
        where = f"{self._source}" + (f" line {line}" if line else "") + f": '{key}'"
        return [choice_from_value(e, where).label for e in entries]

    def config_layer(self) -> ConfigLayer:
        """The ``config:`` section as a layer whose errors name this file and line."""
        lines = {k[1:]: v for k, v in self._lines.items() if k[:1] == ("config",) and len(k) > 1}
        return ConfigLayer(f"{self._source} (config)", self.config, lines)


def load_experiment(path: str | Path) -> ExperimentFile:
    """Read and validate an experiment YAML; errors name the file, line and key."""
    data, lines = load_yaml(path)
    try:
        exp = ExperimentFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        line = lines.get(loc[:1]) if loc else None
        where = f"{path}" + (f" line {line}" if line else "")
        raise ConfigError(f"{where}: '{'.'.join(loc)}': {err['msg']}") from None
    exp._source, exp._lines = str(path), lines
    return exp
