"""The ablation grid: cells (tiler x resampler x loss x seed), experiment files, shards.

An axis entry is a plugin choice ``[dist:]name[:key=value...]`` (``cora_kit.plugin_options``):
``vicreg:variant=batchwise`` and ``vicreg:variant=pairwise`` are two rows of one grid.

An experiment file is either a full grid (``resamplers`` x ``losses`` [x ``tilers``]) or a
union of small grids around one setting: ``base`` (tiler, resampler, loss) and ``sweeps``,
each varying one axis (or a few) while the others stay at ``base``; a configuration that
several sweeps reach (the base itself) runs once. A sweep may carry ``set`` overrides
(``key.path=value``, as ``--set``, below the command line) for its cells only, e.g. a
stitcher that suits its tiler::

    base: {tiler: e2p, resampler: bimamba, loss: densecl}
    sweeps:
      - {tilers: [e2p, erp-grid]}
      - {tilers: [erp-global], losses: [none], set: [model.stitcher.name=nearest-view]}
      - {losses: [none, vicreg, densecl]}
      - {resamplers: [mlp, bimamba, c-abstractor]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from cora_kit.config import ConfigLayer, load_yaml
from cora_kit.errors import ConfigError
from cora_kit.plugin_options import choice_from_value, folder_name, parse_choice


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid: plugin choice labels (``[dist:]name[:k=v...]``) and a
    seed. ``tiler`` is None when the tiler is not an axis; ``overrides`` are this cell's own
    ``key.path=value`` settings (a sweep's ``set``)."""

    resampler: str
    loss: str
    seed: int
    tiler: str | None = None
    overrides: tuple[str, ...] = ()

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


Entry = str | dict[str, Any]  # a choice text (``vicreg:variant=pairwise``) or {name, options}


class Setting(BaseModel):
    """One configuration of the axes (``tiler`` None: the preset's, not an axis)."""

    model_config = ConfigDict(extra="forbid")

    tiler: Entry | None = None
    resampler: Entry
    loss: Entry


class Sweep(BaseModel):
    """A small grid around ``base``: the axes given vary, the others stay at ``base``."""

    model_config = ConfigDict(extra="forbid")

    tilers: list[Entry] | None = Field(None, min_length=1)
    resamplers: list[Entry] | None = Field(None, min_length=1)
    losses: list[Entry] | None = Field(None, min_length=1)
    #: ``key.path=value`` overrides for this sweep's cells
    set: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_axis_at_least(self) -> Sweep:
        if not (self.tilers or self.resamplers or self.losses):
            raise ValueError("a sweep varies at least one of tilers, resamplers, losses")
        return self


class ExperimentFile(BaseModel):
    """``cora-kit bench configs/experiments/NAME.yaml``: a grid, or ``base`` + ``sweeps``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    preset: str | None = None
    #: each a choice text (``vicreg:variant=pairwise``) or ``{name: ..., options: {...}}``
    resamplers: list[Entry] | None = None
    losses: list[Entry] | None = None
    tilers: list[Entry] | None = None
    base: Setting | None = None
    sweeps: list[Sweep] | None = Field(None, min_length=1)
    seeds: int = Field(3, ge=1)
    stages: list[int] = Field(default_factory=lambda: [1, 2, 3])
    baseline: str | None = None
    #: config overrides applied to every cell (same keys as a --config file)
    config: dict[str, Any] = Field(default_factory=dict)
    #: where it was read from and the line of every key (for errors); set by load_experiment
    _source: str = PrivateAttr("experiment")
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _grid_or_sweeps(self) -> ExperimentFile:
        grid = self.resamplers is not None or self.losses is not None or self.tilers is not None
        if self.sweeps is not None or self.base is not None:
            if grid:
                raise ValueError("give either resamplers/losses/tilers (a grid) or base + sweeps, not both")
            if self.sweeps is None or self.base is None:
                raise ValueError("sweeps need a base setting and base needs sweeps")
            if self.base.tiler is None and any(s.tilers for s in self.sweeps):
                raise ValueError("a sweep over tilers needs base.tiler")
        elif not self.resamplers or not self.losses:
            raise ValueError("an experiment needs resamplers and losses (a grid), or base + sweeps")
        return self

    def _label(self, value: Any, where: str) -> str:
        return choice_from_value(value, f"{self._source}: {where}").label

    def base_row(self) -> tuple[str | None, str, str] | None:
        """The base setting as (tiler, resampler, loss) labels; None for a grid."""
        if self.base is None:
            return None
        tiler = self._label(self.base.tiler, "base.tiler") if self.base.tiler is not None else None
        return (tiler, self._label(self.base.resampler, "base.resampler"), self._label(self.base.loss, "base.loss"))

    def cells(self, seeds: int | None = None) -> list[Cell]:
        """The experiment's cells with ``seeds`` (default: its own): the grid, or the
        union of the sweeps."""
        n = self.seeds if seeds is None else seeds
        if self.sweeps is not None:
            return self.sweep_cells(n)
        return build_grid(self.axis("resamplers") or [], self.axis("losses") or [], n, self.axis("tilers"))

    def _sweep_axis(self, entries: list[Any] | None, where: str, default: str | None) -> list[str | None]:
        """A sweep's labels on one axis, or ``[default]`` (the base's) when it keeps it."""
        if not entries:
            return [default]
        return list(_labels([self._label(e, where) for e in entries], where))

    def sweep_cells(self, seeds: int) -> list[Cell]:
        """The union of the sweeps' grids around ``base``, each distinct configuration once
        (in order of first appearance), times ``seeds``. A configuration two sweeps reach
        with different ``set`` overrides is a ConfigError."""
        if self.base is None or self.sweeps is None:
            raise ConfigError(f"{self._source}: no base + sweeps")
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1; got {seeds}")
        base = self.base_row()
        assert base is not None
        configs: dict[tuple[str | None, str, str], tuple[str, ...]] = {}
        for k, sweep in enumerate(self.sweeps, start=1):
            for t in self._sweep_axis(sweep.tilers, f"sweep {k} tilers", base[0]):
                for r in self._sweep_axis(sweep.resamplers, f"sweep {k} resamplers", base[1]):
                    for l in self._sweep_axis(sweep.losses, f"sweep {k} losses", base[2]):
                        key, sets = (t, r, l), tuple(sweep.set)
                        if key in configs and configs[key] != sets:
                            raise ConfigError(
                                f"{self._source}: sweep {k} gives {':'.join(x for x in key if x)} the set"
                                f" {list(sets)}, an earlier sweep {list(configs[key])}; a configuration runs once"
                            )
                        configs.setdefault(key, sets)
        return [Cell(resampler=r, loss=l, seed=s, tiler=t, overrides=sets)
                for (t, r, l), sets in configs.items() for s in range(seeds)]

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
