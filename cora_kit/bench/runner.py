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
from cora_kit.config import CoraConfig, resolve_config
from cora_kit.errors import CoraKitError

CellTrainer = Callable[[CoraConfig, Path, Path, Sequence[int]], Mapping[str, Any]]


@dataclass
class BenchSpec:
    """What to run: the grid and how each cell's config is built."""

    cells: list[Cell]
    preset: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
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


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def cell_config(spec: BenchSpec, cell: Cell) -> CoraConfig:
    """The config of one cell: the shared config with this cell's plugins and seed."""
    extra: dict[str, Any] = json.loads(json.dumps(spec.extra))
    model: dict[str, Any] = {
        "resampler": {"name": cell.resampler, "options": dict(spec.resampler_options)},
        "loss": {"name": cell.loss, "options": dict(spec.loss_options)},
    }
    if cell.tiler is not None:
        model["tiler"] = {"name": cell.tiler}
    _deep_update(extra, {"seed": cell.seed, "model": model})
    if spec.data is not None:
        _deep_update(extra, {"data": {"path": spec.data}})
    return resolve_config(spec.preset, spec.config_file, spec.overrides, extra=extra)


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
    from cora_kit.eval.scoring import per_item_scores, read_predictions, read_references

    record: dict[str, Any] = {
        "run_dir": str(result.out_dir),
        "run_seconds": result.seconds,
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
    for control in ("blank", "shuffled"):
        ctrl = (result.scores or {}).get(control) or {}
        record[f"scores_{control}"] = {k: v for k, v in ctrl.items() if k != "unavailable"}
    pred_path = Path(result.out_dir) / "predictions.jsonl"
    ref_path = Path(result.out_dir) / "references.jsonl"
    if pred_path.is_file() and ref_path.is_file():
        per_item, _ = per_item_scores(
            read_predictions(pred_path), read_references(ref_path), config.eval.metrics
        )
        record["per_item"] = per_item
    return record


def run_grid(
    spec: BenchSpec,
    bench_dir: Path,
    trainer: CellTrainer = default_trainer,
    on_cell: Callable[[Cell, str], None] | None = None,
) -> BenchProgress:
    """Run every unfinished cell of ``spec`` under ``bench_dir``; failures are recorded."""
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
            (cell_dir / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
            error = {
                "status": "failed",
                "cell": _cell_dict(cell),
                "error": f"{type(exc).__name__}: {exc}",
                "user_error": isinstance(exc, CoraKitError),
                "wall_time_s": time.perf_counter() - start,
            }
            (cell_dir / "error.json").write_text(json.dumps(error, indent=2) + "\n", encoding="utf-8")
            progress.failed.append(cell.cell_id)
            if on_cell:
                on_cell(cell, "failed")
            continue
        record.update(status="ok", cell=_cell_dict(cell), wall_time_s=time.perf_counter() - start)
        tmp = cell_dir / "cell.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(cell_dir / "cell.json")
        progress.ran.append(cell.cell_id)
        if on_cell:
            on_cell(cell, "ok")
    return progress


def _cell_dict(cell: Cell) -> dict[str, Any]:
    return {"tiler": cell.tiler, "resampler": cell.resampler, "loss": cell.loss, "seed": cell.seed}
