"""Run an ablation grid: every cell a normal run, one shared feature cache, resumable.

Layout of ``bench/NAME/``::

    bench.json                 the grid spec (what was asked)
    feature_cache/             shared frozen-encoder features (paid once per image)
    cells/<cell_id>/           a normal run folder + cell.json (ok) or error.json +
                               traceback.txt (failed)
    table.{csv,md,tex,json}, plot.png

A cell with ``cell.json`` is finished and skipped on re-run; a failed cell is retried.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cora_kit.bench.grid import Cell
from cora_kit.config import ConfigLayer, CoraConfig, override_layers, resolve_config
from cora_kit.errors import ConfigError, CoraKitError
from cora_kit.fs import write_text_atomic
from cora_kit.plugin_options import parse_choice

CellTrainer = Callable[[CoraConfig, Path, Path, Sequence[int]], Mapping[str, Any]]


@dataclass
class BenchSpec:
    """What to run: the grid and how each cell's config is built.

    A cell's config: preset < ``config_file`` < ``layers`` (an experiment file's
    ``config:``) < the cell's own ``overrides`` (a sweep's ``set``) < ``extra`` (typed
    flags: data, protocol) < the cell's plugin names and seed < ``overrides`` (``--set``) < ``resampler_options`` / ``loss_options`` (grid-wide
    ``--resampler-opt`` / ``--loss-opt``) < the cell's own options (``vicreg:variant=pairwise``).
    """

    cells: list[Cell]
    preset: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    layers: list[ConfigLayer] = field(default_factory=list)
    data: str | None = None
    stages: tuple[int, ...] = (1, 2, 3)
    resampler_options: dict[str, Any] = field(default_factory=dict)
    loss_options: dict[str, Any] = field(default_factory=dict)
    use_shared_cache: bool = True


@dataclass
class BenchProgress:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


#: ``--set`` keys that the grid's axes own
_AXIS_KEYS = {
    "seed": "--seeds",
    "model.resampler.name": "--resamplers",
    "model.loss.name": "--losses",
}


def cell_config(spec: BenchSpec, cell: Cell) -> CoraConfig:
    """The config of one cell: the shared config with this cell's plugins, options and seed."""
    resampler = parse_choice(cell.resampler, "resampler")
    loss = parse_choice(cell.loss, "loss")
    model: dict[str, Any] = {"resampler": {"name": resampler.name}, "loss": {"name": loss.name}}
    options = {
        "resampler": {**spec.resampler_options, **resampler.options},
        "loss": {**spec.loss_options, **loss.options},
    }
    if cell.tiler is not None:
        tiler = parse_choice(cell.tiler, "tiler")
        model["tiler"] = {"name": tiler.name}
        options["tiler"] = tiler.options
    layers = [*spec.layers, *override_layers(cell.overrides, "experiment sweep 'set'")]
    typed = dict(spec.extra)
    if spec.data is not None:
        typed["data"] = {**typed.get("data", {}), "path": spec.data}
    if typed:
        layers.append(ConfigLayer("command line", typed))
    return resolve_config(
        spec.preset, spec.config_file, spec.overrides, extra={"seed": cell.seed, "model": model},
        layers=layers, plugin_options=options,
    )


def validate_spec(spec: BenchSpec) -> None:
    """Every cell's config, plugin names and plugin options, before the first cell runs
    (one ``ConfigError`` naming the cell and the option)."""
    from cora_kit.config import validate_plugin_choices

    axis_keys = dict(_AXIS_KEYS)
    if any(c.tiler is not None for c in spec.cells):
        axis_keys["model.tiler.name"] = "--tilers"
    for flag, texts in (("--set", spec.overrides), ("a sweep's set:", {t for c in spec.cells for t in c.overrides})):
        for text in texts:
            key = text.split("=", 1)[0].strip()
            if key in axis_keys:
                raise ConfigError(f"{flag} {text}: '{key}' is an axis of the grid; use {axis_keys[key]}")
    seen: dict[str, str] = {}
    groups: set[tuple[str | None, str, str]] = set()
    for cell in spec.cells:
        if cell.group in groups:
            continue  # seeds share everything else
        groups.add(cell.group)
        what = " x ".join(p for p in (cell.tiler, cell.resampler, cell.loss) if p is not None)
        try:
            config = cell_config(spec, cell)
            validate_plugin_choices(config)
            key = _effective(config)
        except CoraKitError as exc:
            raise ConfigError(f"grid cell {what}: {exc}") from None
        if key in seen:
            raise ConfigError(
                f"grid cells {seen[key]} and {what} are the same configuration (same plugins, same"
                " options once defaults apply): drop one"
            )
        seen[key] = what


def _effective(config: CoraConfig) -> str:
    """The cell's config with each axis plugin as (distribution:name, validated params)."""
    from cora_kit.registry import REGISTRY

    data = config.model_dump(mode="json")
    data.pop("seed", None)
    for kind in ("tiler", "resampler", "loss"):
        choice = getattr(config.model, kind)
        plugin = REGISTRY.lookup(kind, choice.name)
        data["model"][kind] = [plugin.qualified_name, plugin.validate_params(dict(choice.options))]
    return json.dumps(data, sort_keys=True, default=str)


def is_finished(cell_dir: Path) -> bool:
    return (cell_dir / "cell.json").is_file()


def default_trainer(
    config: CoraConfig, run_dir: Path, cache_dir: Path, stages: Sequence[int]
) -> Mapping[str, Any]:
    """Train and evaluate one cell with the same code as ``cora-kit run``; returns the
    cell record (scores, per-item scores, diagnostics, trainable params, cache stats)."""
    from cora_kit.pipeline import CoraModel
    from cora_kit.train.engine import run

    result = run(config, run_dir, stages=tuple(stages), model_factory=CoraModel.from_config,
                 feature_cache_dir=cache_dir, plain_progress=True)
    return cell_record(result, config)


def cell_record(result: Any, config: CoraConfig) -> dict[str, Any]:
    """What the tables need from a finished run (``RunResult``)."""
    from cora_kit.eval.scoring import per_item_scores, read_kinds, read_predictions, read_references
    from cora_kit.train.report import CONTROLS

    record: dict[str, Any] = {
        "run_dir": str(result.out_dir),
        "run_seconds": result.seconds,
        # the largest count over the stages that ran; per stage in trainable_by_stage
        "trainable_params": max(
            (sum(st.trainable.values()) for st in result.stages.values() if st.trainable), default=0
        ),
        "trainable_by_stage": {str(k): sum(st.trainable.values()) for k, st in result.stages.items()},
        "encoder_image_passes": result.cache_stats.get("encoder_image_passes", 0),
        "cache_hits": result.cache_stats.get("cache_hits", 0),
    }
    after = (result.diagnostics or {}).get("after") or {}
    record["diagnostics"] = after.get("values", after)
    scores = (result.scores or {}).get("panorama") or {}
    record["unavailable"] = dict(scores.get("unavailable", {}))
    record["scores"] = {k: v for k, v in scores.items() if k != "unavailable"}
    for control in CONTROLS:
        ctrl = (result.scores or {}).get(control) or {}
        record[f"scores_{control}"] = {k: v for k, v in ctrl.items() if k != "unavailable"}
    pred_path = Path(result.out_dir) / "predictions.jsonl"
    ref_path = Path(result.out_dir) / "references.jsonl"
    if pred_path.is_file() and ref_path.is_file():
        per_item, missing = per_item_scores(
            read_predictions(pred_path), read_references(ref_path), config.eval.metrics,
            kinds=read_kinds(ref_path) or None,
        )
        record["per_item"] = per_item
        record["per_item_missing"] = missing
    return record


def run_grid(
    spec: BenchSpec,
    bench_dir: Path,
    trainer: CellTrainer | None = None,
    on_cell: Callable[[Cell, str], None] | None = None,
) -> BenchProgress:
    """Run every unfinished cell of ``spec`` under ``bench_dir``; failures are recorded.
    ``trainer`` defaults to ``default_trainer`` (looked up at call time)."""
    trainer = trainer or default_trainer
    bench_dir.mkdir(parents=True, exist_ok=True)
    progress = BenchProgress()
    shared_cache = bench_dir / "feature_cache"
    for cell in spec.cells:
        cell_dir = bench_dir / "cells" / cell.cell_id
        if is_finished(cell_dir):
            progress.skipped.append(cell.cell_id)
            if on_cell:
                on_cell(cell, "skipped")
            continue
        cell_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("error.json", "traceback.txt"):
            (cell_dir / stale).unlink(missing_ok=True)
        cache = shared_cache if spec.use_shared_cache else cell_dir / "feature_cache"
        start = time.perf_counter()
        try:
            config = cell_config(spec, cell)
            record = dict(trainer(config, cell_dir, cache, spec.stages))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failing cell must not stop the grid
            write_text_atomic(cell_dir / "traceback.txt", traceback.format_exc())
            error = {
                "status": "failed",
                "cell": _cell_dict(cell),
                "error": f"{type(exc).__name__}: {exc}",
                "user_error": isinstance(exc, CoraKitError),
                "wall_time_s": time.perf_counter() - start,
            }
            write_text_atomic(cell_dir / "error.json", json.dumps(error, indent=2) + "\n")
            progress.failed.append(cell.cell_id)
            if on_cell:
                on_cell(cell, "failed")
            continue
        record.update(status="ok", cell=_cell_dict(cell), wall_time_s=time.perf_counter() - start)
        write_text_atomic(cell_dir / "cell.json", json.dumps(record, indent=2, default=str) + "\n")
        progress.ran.append(cell.cell_id)
        if on_cell:
            on_cell(cell, "ok")
    return progress


def _cell_dict(cell: Cell) -> dict[str, Any]:
    out: dict[str, Any] = {"tiler": cell.tiler, "resampler": cell.resampler, "loss": cell.loss, "seed": cell.seed}
    if cell.overrides:
        out["overrides"] = list(cell.overrides)
    return out
