"""``cora-kit bench``: ablation tables of (tilers x) resamplers x losses x seeds.

    cora-kit bench --resamplers mlp,bimamba --losses none,densecl --seeds 3 [--preset tiny]
    cora-kit bench configs/experiments/paper-table1.yaml --data data/quic360
    cora-kit bench merge bench/NAME
    cora-kit bench report bench/NAME          # bench/NAME/report.html (cora_kit.bench.html_report)
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from cora_kit.bench.grid import Cell, build_grid, load_experiment, parse_shard, shard_cells
from cora_kit.bench.merge import merge
from cora_kit.bench.runner import BenchSpec, run_grid
from cora_kit.errors import ConfigError
from cora_kit.eval.scoring import DEFAULT_METRICS


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    from cora_kit.config import parse_override

    out: dict[str, Any] = {}
    for pair in pairs:
        keys, value = parse_override(pair)
        if len(keys) != 1:
            raise ConfigError(f"{flag} takes key=value with a plain key; got {pair!r}")
        out[keys[0]] = value
    return out


def _validate_names(cells: list[Cell]) -> None:
    from cora_kit.registry import REGISTRY

    for kind, names in (
        ("resampler", {c.resampler for c in cells}),
        ("loss", {c.loss for c in cells}),
        ("tiler", {c.tiler for c in cells if c.tiler}),
    ):
        for name in sorted(names):
            REGISTRY.lookup(kind, name)


def _versions() -> dict[str, Any]:
    import torch

    from cora_kit import __version__

    return {"cora_kit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.platform()}


def bench(
    args: list[str] = typer.Argument(None, help="EXPERIMENT.yaml, 'merge BENCH_DIR' or 'report BENCH_DIR'."),
    resamplers: str = typer.Option(None, "--resamplers", help="Comma-separated resampler names."),
    losses: str = typer.Option(None, "--losses", help="Comma-separated overlap loss names."),
    tilers: str = typer.Option(None, "--tilers", help="Comma-separated tilers: adds the tiler axis."),
    seeds: int = typer.Option(None, "--seeds", help="Seeds per cell (default 3)."),
    preset: str = typer.Option(None, "--preset", help="Preset (tiny, paper)."),
    config: Path = typer.Option(None, "--config", help="YAML layered over the preset for every cell."),
    data: str = typer.Option(None, "--data", help="Dataset folder or CSV (default: synthetic)."),
    stages: str = typer.Option(None, "--stages", help="Stages to run, e.g. 1,2,3."),
    out: Path = typer.Option(None, "--out", help="Bench folder (default bench/<name>)."),
    baseline: str = typer.Option(None, "--baseline", help="resampler:loss for paired deltas + 95% CI."),
    shard: str = typer.Option(None, "--shard", help="i/n: run only this deterministic subset of cells."),
    resampler_opt: list[str] = typer.Option([], "--resampler-opt", help="k=v for every resampler."),
    loss_opt: list[str] = typer.Option([], "--loss-opt", help="k=v for every loss."),
    overrides: list[str] = typer.Option([], "--set", help="key.path=value for every cell."),
    no_shared_cache: bool = typer.Option(False, "--no-shared-cache", help="Cache per cell (for comparison)."),
    logger: list[str] = typer.Option(
        [], "--logger", help="Tracker for every cell besides metrics.jsonl: tensorboard, wandb, mlflow (repeatable)."
    ),
) -> None:
    """Run an ablation grid (every cell a normal run) and write table.{csv,md,tex,json} + plot.png."""
    console = Console()
    args = list(args or [])
    if args and args[0] == "merge":
        if len(args) != 2:
            raise ConfigError("usage: cora-kit bench merge BENCH_DIR")
        merge(Path(args[1]), baseline=baseline, console=console)
        return
    if args and args[0] == "report":
        if len(args) != 2:
            raise ConfigError("usage: cora-kit bench report BENCH_DIR")
        from cora_kit.bench.html_report import write_report

        console.print(f"wrote {write_report(Path(args[1]))}", highlight=False)
        return
    if len(args) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(args[1:])}")
    exp = load_experiment(args[0]) if args else None
    name = exp.name if exp else "grid"
    res_list = _split(resamplers) or (exp.resamplers if exp else [])
    loss_list = _split(losses) or (exp.losses if exp else [])
    tiler_list = _split(tilers) or (exp.tilers if exp and exp.tilers else None)
    n_seeds = seeds or (exp.seeds if exp else 3)
    stage_list = tuple(int(s) for s in _split(stages)) if stages else tuple(exp.stages if exp else (1, 2, 3))
    if not res_list or not loss_list:
        raise ConfigError("give --resamplers and --losses, or an experiment YAML file")
    cells = build_grid(res_list, loss_list, n_seeds, tiler_list)
    _validate_names(cells)
    if shard:
        i, n = parse_shard(shard)
        cells = shard_cells(cells, i, n)
    bench_dir = out or Path("bench") / name
    extra = dict(exp.config) if exp else {}
    if logger:
        from cora_kit.commands.run import parse_loggers

        extra["logging"] = {**extra.get("logging", {}), "loggers": parse_loggers(logger), "group": name}
    spec = BenchSpec(
        cells=cells,
        preset=preset or (exp.preset if exp else None),
        config_file=str(config) if config else None,
        overrides=list(overrides),
        extra=extra,
        data=data,
        stages=stage_list,
        resampler_options=_options(resampler_opt, "--resampler-opt"),
        loss_options=_options(loss_opt, "--loss-opt"),
        use_shared_cache=not no_shared_cache,
    )
    from cora_kit.bench.runner import cell_config

    metrics = list(cell_config(spec, cells[0]).eval.metrics) if cells else list(DEFAULT_METRICS)
    bench_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": name, "resamplers": res_list, "losses": loss_list, "tilers": tiler_list,
        "seeds": n_seeds, "stages": list(stage_list), "baseline": baseline or (exp.baseline if exp else None),
        "metrics": metrics, "versions": _versions(),
    }
    (bench_dir / "bench.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    console.print(f"[bold]bench[/] {name}: {len(cells)} cell(s) -> {bench_dir}")

    def on_cell(cell: Cell, status: str) -> None:
        style = {"ok": "green", "skipped": "dim", "failed": "red"}[status]
        console.print(f"  [{style}]{status:>7}[/] {cell.cell_id}")

    progress = run_grid(spec, bench_dir, on_cell=on_cell)
    console.print(
        f"ran {len(progress.ran)}, skipped {len(progress.skipped)} finished, failed {len(progress.failed)}"
    )
    if shard:
        console.print(f"shard {shard} done; build the tables with: cora-kit bench merge {bench_dir}")
        return
    merge(bench_dir, metrics=metrics, baseline=meta["baseline"], console=console)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
