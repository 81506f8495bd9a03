"""``cora-kit bench``: ablation tables of (tilers x) resamplers x losses x seeds.

    cora-kit bench --resamplers mlp,bimamba --losses none,densecl --seeds 3 [--preset tiny]
    cora-kit bench --losses vicreg:variant=batchwise,vicreg:variant=pairwise --resamplers bimamba
    cora-kit bench configs/experiments/paper-table1.yaml --data data/quic360
    cora-kit bench configs/experiments/synth-claims.yaml       # base + one-axis sweeps
    cora-kit bench merge bench/A [bench/B ...] [--out OUT] [--baseline R:L]
    cora-kit bench report bench/NAME          # bench/NAME/report.html (cora_kit.bench.html_report)

``bench`` is a command group whose default command is ``run`` (``cora-kit bench ARGS`` is
``cora-kit bench run ARGS`` unless ARGS starts with a sub-command name).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from cora_kit.errors import ConfigError


class _DefaultRunGroup(TyperGroup):
    """Routes ``cora-kit bench [ARGS]`` to ``bench run`` unless ARGS names a sub-command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Ablation grids: `cora-kit bench ...` (same as `bench run`) runs one; `cora-kit bench merge DIR...` builds tables.",
    add_completion=False,
)


def _versions() -> dict[str, Any]:
    import torch

    from cora_kit import __version__

    return {"cora_kit": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.platform()}


@app.command("run")
def bench_run(
    experiment: Path = typer.Argument(
        None, metavar="EXPERIMENT", help="Experiment YAML (configs/experiments/NAME.yaml)."
    ),
    resamplers: str = typer.Option(
        None, "--resamplers", help="Comma-separated resampler choices: name, dist:name or name:key=value (options)."
    ),
    losses: str = typer.Option(
        None, "--losses", help="Comma-separated loss choices, e.g. none,vicreg:variant=pairwise."
    ),
    tilers: str = typer.Option(None, "--tilers", help="Comma-separated tilers: adds the tiler axis."),
    seeds: int = typer.Option(None, "--seeds", help="Seeds per cell (default 3)."),
    preset: str = typer.Option(None, "--preset", help="Preset (tiny, paper)."),
    config: Path = typer.Option(None, "--config", help="YAML layered over the preset for every cell."),
    data: str = typer.Option(None, "--data", help="Dataset folder or CSV (default: synthetic)."),
    stages: str = typer.Option(None, "--stages", help="Stages to run, e.g. 1,2,3."),
    out: Path = typer.Option(None, "--out", help="Bench folder (default bench/<name>)."),
    baseline: str = typer.Option(
        None, "--baseline", help="Row for paired deltas + 95% CI: resampler:loss or tiler:resampler:loss."
    ),
    protocol: str = typer.Option(None, "--protocol", help="Scoring protocol: grouped (default) or paper."),
    shard: str = typer.Option(None, "--shard", help="i/n: run only this deterministic subset of cells."),
    jobs: int = typer.Option(
        1, "--jobs", min=1,
        help="Cells run at once: N processes (one shard each, cores/N threads), then the tables.",
    ),
    resampler_opt: list[str] = typer.Option([], "--resampler-opt", help="k=v for every resampler."),
    loss_opt: list[str] = typer.Option([], "--loss-opt", help="k=v for every loss."),
    overrides: list[str] = typer.Option([], "--set", help="key.path=value for every cell."),
    no_shared_cache: bool = typer.Option(False, "--no-shared-cache", help="Cache per cell (for comparison)."),
    logger: list[str] = typer.Option(
        [], "--logger", help="Tracker for every cell besides metrics.jsonl: tensorboard, wandb, mlflow (repeatable)."
    ),
) -> None:
    """Run an ablation grid (every cell a normal run) and write table.{csv,md,tex,json} + plot.png.

    Every cell's config, plugin names and options, and --baseline are checked before the first cell runs. `cora-kit bench merge DIR... --out OUT` rebuilds or merges tables.
    """
    from cora_kit.bench.merge import merge
    from cora_kit.bench.runner import run_grid
    from cora_kit.fs import write_text_atomic

    console = Console()
    grid = _plan(
        experiment, resamplers=resamplers, losses=losses, tilers=tilers, seeds=seeds, preset=preset,
        config=config, data=data, stages=stages, protocol=protocol, resampler_opt=resampler_opt,
        loss_opt=loss_opt, overrides=overrides, shared_cache=not no_shared_cache, baseline=baseline,
        logger=logger,
    )
    if shard and jobs > 1:
        raise ConfigError("--jobs runs the shards itself: give --shard or --jobs, not both")
    if shard:
        from cora_kit.bench.grid import parse_shard, shard_cells

        grid.spec.cells = shard_cells(grid.spec.cells, *parse_shard(shard))
    bench_dir = out or Path("bench") / grid.meta["name"]
    bench_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(bench_dir / "bench.json", json.dumps(grid.meta, indent=2) + "\n")
    console.print(f"[bold]bench[/] {grid.meta['name']}: {len(grid.spec.cells)} cell(s) -> {bench_dir}", highlight=False)

    def show_cell(cell_id: str, status: str) -> None:
        style = {"ok": "green", "skipped": "dim", "failed": "red"}[status]
        console.print(f"  [{style}]{status:>7}[/] {cell_id}", highlight=False)

    if jobs > 1:
        failed = _run_jobs(grid, bench_dir, jobs, console, show_cell, [
            *([str(experiment)] if experiment else []),
            *_flag("--resamplers", resamplers), *_flag("--losses", losses), *_flag("--tilers", tilers),
            *_flag("--seeds", seeds), *_flag("--preset", preset), *_flag("--config", config),
            *_flag("--data", data), *_flag("--stages", stages), *_flag("--out", bench_dir),
            *_flag("--baseline", baseline), *_flag("--protocol", protocol),
            *_flags("--resampler-opt", resampler_opt), *_flags("--loss-opt", loss_opt),
            *_flags("--set", overrides), *_flags("--logger", logger),
            *(["--no-shared-cache"] if no_shared_cache else []),
        ])
        merge(bench_dir, requested=grid.meta["metrics"], console=console)
        if failed:
            console.print(f"{failed} cell(s) failed: see cells/<cell>/error.json and traceback.txt")
            raise typer.Exit(1)
        return
    progress = run_grid(grid.spec, bench_dir, on_cell=lambda cell, status: show_cell(cell.cell_id, status))
    console.print(
        f"ran {len(progress.ran)}, skipped {len(progress.skipped)} finished, failed {len(progress.failed)}"
    )
    if shard:
        console.print(f"shard {shard} done; build the tables with: cora-kit bench merge {bench_dir}")
        if progress.failed:
            raise typer.Exit(1)
        return
    merge(bench_dir, requested=grid.meta["metrics"], console=console)
    if progress.failed:  # the tables are written; the exit code still says a cell failed
        console.print(f"{len(progress.failed)} cell(s) failed: see cells/<cell>/error.json and traceback.txt")
        raise typer.Exit(1)


def _flag(name: str, value: Any) -> list[str]:
    return [] if value is None else [name, str(value)]


def _flags(name: str, values: list[str]) -> list[str]:
    return [x for v in values for x in (name, v)]


def _run_jobs(grid: _Grid, bench_dir: Path, jobs: int, console: Console,
              show_cell: Callable[[str, str], None], args: list[str]) -> int:
    """``--jobs N``: the data prepared once, then N shard processes
    (``cora_kit.bench.parallel``); returns how many cells failed."""
    from cora_kit.bench.parallel import run_jobs, threads_per_job
    from cora_kit.bench.runner import cell_config, is_finished
    from cora_kit.train.data import data_root

    prepared: set[str] = set()
    for cell in grid.spec.cells:  # generates (or checks) each synthetic set once, before any job
        cfg = cell_config(grid.spec, cell)
        key = cfg.data.model_dump_json()
        if key not in prepared:
            data_root(cfg)
            prepared.add(key)
    ids = [c.cell_id for c in grid.spec.cells]
    console.print(f"{jobs} jobs x {threads_per_job(jobs)} thread(s); logs: {bench_dir / 'jobs'}/shard-<i>-of-{jobs}.log",
                  highlight=False)
    codes = run_jobs(args, bench_dir, jobs, ids, show_cell)
    bad = [f"shard {i}/{jobs} exit {rc}" for i, rc in enumerate(codes) if rc not in (0, 1)]
    if bad:
        console.print(f"[red]{'; '.join(bad)}[/]: see {bench_dir / 'jobs'}", highlight=False)
    finished = sum(is_finished(bench_dir / "cells" / c) for c in ids)
    console.print(f"{finished} of {len(ids)} cell(s) finished")
    return len(ids) - finished


@dataclass
class _Grid:
    spec: Any  # BenchSpec
    meta: dict[str, Any]


def _plan(experiment: Path | None, *, resamplers: str | None, losses: str | None, tilers: str | None,
          seeds: int | None, preset: str | None, config: Path | None, data: str | None,
          stages: str | None, protocol: str | None, resampler_opt: list[str], loss_opt: list[str],
          overrides: list[str], shared_cache: bool, baseline: str | None, logger: list[str]) -> _Grid:
    """The grid from the flags and the experiment file, every cell and the baseline checked
    (ConfigError before any work), and what bench.json records."""
    from cora_kit.bench.baseline import resolve_baseline
    from cora_kit.bench.grid import build_grid, load_experiment
    from cora_kit.bench.runner import BenchSpec, cell_config, validate_spec
    from cora_kit.commands.run import parse_stages
    from cora_kit.plugin_options import parse_option_pairs, split_choices

    exp = load_experiment(experiment) if experiment else None
    n_seeds = seeds if seeds is not None else (exp.seeds if exp else 3)
    stage_list = parse_stages(stages) if stages else tuple(exp.stages if exp else (1, 2, 3))
    if data is not None and not Path(data).exists():
        raise ConfigError(f"--data {data}: no such file or folder")
    if protocol is not None and protocol not in ("grouped", "paper"):
        raise ConfigError(f"--protocol must be grouped or paper; got {protocol!r}")
    if exp is not None and exp.sweeps is not None:
        if resamplers or losses or tilers:
            raise ConfigError(f"{experiment} defines sweeps; --resamplers/--losses/--tilers do not apply to it")
        cells = exp.cells(n_seeds)
    else:
        res_list = split_choices(resamplers) or (exp.axis("resamplers") if exp else [])
        loss_list = split_choices(losses) or (exp.axis("losses") if exp else [])
        tiler_list = split_choices(tilers) or (exp.axis("tilers") if exp else None)
        if not res_list or not loss_list:
            raise ConfigError("give --resamplers and --losses, or an experiment YAML file")
        cells = build_grid(res_list, loss_list, n_seeds, tiler_list)
    typed: dict[str, Any] = {"eval": {"protocol": protocol}} if protocol else {}
    if logger:
        from cora_kit.commands.run import parse_loggers

        typed["logging"] = {"loggers": parse_loggers(logger), "group": exp.name if exp else "grid"}
    spec = BenchSpec(
        cells=cells,
        preset=preset or (exp.preset if exp else None),
        config_file=str(config) if config else None,
        overrides=list(overrides),
        extra=typed,
        layers=[exp.config_layer()] if exp else [],
        data=data,
        stages=stage_list,
        resampler_options=parse_option_pairs(resampler_opt, "--resampler-opt"),
        loss_options=parse_option_pairs(loss_opt, "--loss-opt"),
        use_shared_cache=shared_cache,
    )
    validate_spec(spec)  # the whole grid, before any work
    text = baseline or (exp.baseline if exp else None)
    rows = [c.group for c in cells]
    resolved = resolve_baseline(text, rows) if text else None
    base = exp.base_row() if exp else None
    base_tiler = base[0] if base else None
    if resolved is not None and base_tiler and not resolved.tiler_given:  # sweeps: at the base's tiler
        resolved = resolve_baseline(f"{base_tiler}:{resolved.label}", rows)

    def axis(values: list[str | None]) -> list[str]:
        return list(dict.fromkeys(v for v in values if v))

    meta = {
        "name": exp.name if exp else "grid",
        "resamplers": axis([c.resampler for c in cells]), "losses": axis([c.loss for c in cells]),
        "tilers": axis([c.tiler for c in cells]) or None, "seeds": n_seeds, "stages": list(stage_list),
        "baseline": resolved.label if resolved else None, "protocol": protocol or "grouped",
        "metrics": list(cell_config(spec, cells[0]).eval.metrics), "versions": _versions(),
    }
    if exp is not None and base is not None:  # sweeps: the baseline is taken at the base's tiler
        meta["base"] = dict(zip(("tiler", "resampler", "loss"), base))
        meta["sweeps"] = [s.model_dump(exclude_none=True) for s in exp.sweeps or []]
        meta["baseline_tiler"] = base_tiler
    return _Grid(spec, meta)


@app.command("merge")
def bench_merge(
    bench_dirs: list[Path] = typer.Argument(
        ..., metavar="DIR", help="Bench folders (shards of one grid, or several grids)."
    ),
    out: Path = typer.Option(None, "--out", help="Where the tables go (needed for several folders)."),
    baseline: str = typer.Option(None, "--baseline", help="resampler:loss or tiler:resampler:loss."),
) -> None:
    """Build table.{csv,md,tex,json} + plot.png from the finished cells of one or more grids.

    A cell found in two folders counts once when its settings agree (an error otherwise).
    """
    from cora_kit.bench.merge import merge

    missing = [str(d) for d in bench_dirs if not d.is_dir()]
    if missing:
        raise ConfigError(f"bench merge: no such folder: {missing[0]}")
    merge(list(bench_dirs), out=out, baseline=baseline, console=Console())


@app.command("report")
def bench_report(
    bench_dir: Path = typer.Argument(..., metavar="DIR", help="A bench folder with finished cells."),
) -> None:
    """Write DIR/report.html: the table, the plot, and the test items with every cell's prediction."""
    from cora_kit.bench.html_report import write_report

    if not bench_dir.is_dir():
        raise ConfigError(f"bench report: no such folder: {bench_dir}")
    Console().print(f"wrote {write_report(bench_dir)}", highlight=False)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bench")
