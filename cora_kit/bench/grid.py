"""The ablation grid: cells (tiler x resampler x loss x seed), experiment files, shards.

An experiment file is either a full grid (``resamplers`` x ``losses`` [x ``tilers``]) or a
union of small grids around one setting: ``base`` (tiler, resampler, loss) and ``sweeps``,
each sweep varying one axis (or a few) while the others stay at ``base``; a configuration
that several sweeps share (the base itself) runs once. A sweep may carry ``set`` overrides
(``key.path=value``, as ``--set``) for its cells only, e.g. a stitcher that suits its tiler::

    base: {tiler: e2p, resampler: bimamba, loss: densecl}
    sweeps:
      - {tilers: [e2p, erp-grid]}
      - {losses: [none, vicreg, densecl]}
      - {resamplers: [mlp, bimamba, c-abstractor]}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cora_kit.config import load_yaml
from cora_kit.errors import ConfigError


@dataclass(frozen=True, order=True)
class Cell:
    """One training run of the grid. ``tiler`` is None when the tiler is not an axis."""

    resampler: str
    loss: str
    seed: int
    tiler: str | None = None
    #: ``key.path=value`` overrides of this cell only (a sweep's ``set``)
    overrides: tuple[str, ...] = ()

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


class Setting(BaseModel):
    """One configuration of the three axes (``tiler`` None: the preset's, not an axis)."""

    model_config = ConfigDict(extra="forbid")

    tiler: str | None = None
    resampler: str
    loss: str


class Sweep(BaseModel):
    """A small grid around ``base``: the listed axes vary, the others stay at ``base``."""

    model_config = ConfigDict(extra="forbid")

    tilers: list[str] | None = Field(None, min_length=1)
    resamplers: list[str] | None = Field(None, min_length=1)
    losses: list[str] | None = Field(None, min_length=1)
    #: ``key.path=value`` overrides for this sweep's cells
    set: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_axis_at_least(self) -> Sweep:
        if not (self.tilers or self.resamplers or self.losses):
            raise ValueError("a sweep varies at least one of tilers, resamplers, losses")
        return self


class ExperimentFile(BaseModel):
    """``cora-kit bench configs/experiments/NAME.yaml``: a grid or ``base`` + ``sweeps``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    preset: str | None = None
    resamplers: list[str] | None = None
    losses: list[str] | None = None
    tilers: list[str] | None = None
    base: Setting | None = None
    sweeps: list[Sweep] | None = Field(None, min_length=1)
    seeds: int = Field(3, ge=1)
    stages: list[int] = Field(default_factory=lambda: [1, 2, 3])
    baseline: str | None = None
    #: config overrides applied to every cell (same keys as a --config file)
    config: dict[str, Any] = Field(default_factory=dict)

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

    def cells(self, seeds: int | None = None) -> list[Cell]:
        """The experiment's cells: the grid, or the union of the sweeps (each distinct
        configuration once, in order of first appearance), times ``seeds``."""
        n = seeds or self.seeds
        if self.sweeps is None:
            return build_grid(list(self.resamplers or []), list(self.losses or []), n, self.tilers)
        return sweep_cells(self.base, self.sweeps, n)  # type: ignore[arg-type]


def sweep_cells(base: Setting, sweeps: list[Sweep], seeds: int) -> list[Cell]:
    """Union of the sweeps' grids around ``base``; a configuration reached by two sweeps
    with different ``set`` overrides is a ConfigError."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1; got {seeds}")
    configs: dict[tuple[str | None, str, str], tuple[str, ...]] = {}
    for k, sweep in enumerate(sweeps):
        for t in sweep.tilers or [base.tiler]:
            for r in sweep.resamplers or [base.resampler]:
                for l in sweep.losses or [base.loss]:
                    key, sets = (t, r, l), tuple(sweep.set)
                    if key in configs and configs[key] != sets:
                        raise ConfigError(
                            f"sweep {k + 1} gives {':'.join(x for x in key if x)} the overrides {list(sets)}, "
                            f"an earlier sweep {list(configs[key])}; a configuration runs once"
                        )
                    configs.setdefault(key, sets)
    return [
        Cell(resampler=r, loss=l, seed=s, tiler=t, overrides=sets)
        for (t, r, l), sets in configs.items()
        for s in range(seeds)
    ]


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
