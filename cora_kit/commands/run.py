"""``cora-kit run``: train the three stages and evaluate, into ``runs/<name>/``.

Also the entry of ``torchrun --nproc-per-node N -m cora_kit run ...`` (DDP).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from cora_kit.errors import ConfigError


def parse_stages(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3); anything else is a ConfigError."""
    try:
        stages = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        raise ConfigError(f"--stages must look like 1,2,3; got {text!r}") from None
    if not stages or any(s not in (1, 2, 3) for s in stages):
        raise ConfigError(f"--stages must be a subset of 1,2,3; got {text!r}")
    return stages


def parse_loggers(values: list[str]) -> list[str]:
    """``["tensorboard,wandb", "mlflow"]`` -> ``["jsonl", "tensorboard", "wandb", "mlflow"]``."""
    from cora_kit.train.trackers import LOGGERS

    names = [v.strip() for text in values for v in text.split(",") if v.strip()]
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--logger {name!r}: choose from {', '.join(LOGGERS)}")
    return list(dict.fromkeys(["jsonl", *names]))


def default_name(resampler: str, loss: str, seed: int) -> str:
    """``<resampler>-<loss>-s<seed>``; a ``dist:name`` becomes ``dist+name`` (``folder_name``)."""
    from cora_kit.plugin_options import folder_name

    return f"{folder_name(resampler)}-{folder_name(loss)}-s{seed}"


def run(
    resampler: str = typer.Option(
        None, "--resampler", "-r", help="Resampler plugin: [dist:]name[:key=value...] (see `cora-kit plugins`)."
    ),
    loss: str = typer.Option(None, "--loss", "-l", help="Overlap loss plugin: [dist:]name[:key=value...]."),
    preset: str = typer.Option(None, "--preset", "-p", help="Preset: tiny (default, CPU) or paper."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file layered over the preset."),
    data: str = typer.Option(None, "--data", help="Dataset folder or CSV (default: the synthetic set)."),
    stages: str = typer.Option("1,2,3", "--stages", help="Stages to run, e.g. 1,2,3 or 2,3."),
    from_run: Path = typer.Option(None, "--from", help="Run folder whose earlier stages' weights to start from."),
    name: str = typer.Option(None, "--name", help="Run name (default: <resampler>-<loss>-s<seed>)."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder holding run folders."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default: from config, 0)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run exactly."),
    resampler_opt: list[str] = typer.Option([], "--resampler-opt", help="Resampler option k=v (repeatable)."),
    loss_opt: list[str] = typer.Option([], "--loss-opt", help="Loss option k=v (repeatable)."),
    overrides: list[str] = typer.Option([], "--set", help="Config override key.path=value (repeatable)."),
    feature_cache: Path = typer.Option(None, "--feature-cache", help="Feature cache folder (default: <out>/.feature-cache)."),
    plain: bool = typer.Option(False, "--plain", help="Plain log lines instead of progress bars."),
    logger: list[str] = typer.Option(
        [], "--logger",
        help="Experiment tracker besides metrics.jsonl (always written): jsonl, tensorboard, wandb, mlflow;"
        " repeatable or comma-separated.",
    ),
    batch_size: str = typer.Option(
        None, "--batch-size",
        help="'auto': per stage, the largest micro-batch that fits; the effective batch is kept by accumulation.",
    ),
    protocol: str = typer.Option(
        None, "--protocol",
        help="Scoring of the test split: grouped (default; all references of each (image, query)) or"
        " paper (each reference row alone, the paper's implementations).",
    ),
) -> None:
    """Train Stage 1-3 and evaluate on the test split; writes runs/<name>/."""
    from cora_kit.config import resolve_config, validate_plugin_choices
    from cora_kit.pipeline import CoraModel
    from cora_kit.plugin_options import parse_choice, parse_option_pairs
    from cora_kit.train.engine import run as run_engine

    wanted = parse_stages(stages)
    extra: dict[str, Any] = {}
    model: dict[str, Any] = {}
    plugin_options: dict[str, dict[str, Any]] = {}
    for kind, text, flag, pairs in (
        ("resampler", resampler, "--resampler", resampler_opt),
        ("loss", loss, "--loss", loss_opt),
    ):
        options = {}
        if text is not None:
            choice = parse_choice(text, flag)
            model[kind] = {"name": choice.name}
            options.update(choice.options)
        options.update(parse_option_pairs(pairs, f"{flag}-opt"))
        plugin_options[kind] = options
    if model:
        extra["model"] = model
    if data is not None:
        extra["data"] = {"path": data}
    if seed is not None:
        extra["seed"] = seed
    if protocol is not None:
        extra["eval"] = {"protocol": protocol}
    if batch_size is not None:
        if batch_size != "auto":
            raise ConfigError(
                f"--batch-size takes 'auto'; got {batch_size!r} (set a stage's batch with --set stages.stage2.batch_size=N)"
            )
        extra["auto_batch"] = True
    if logger:
        extra["logging"] = {"loggers": parse_loggers(logger)}
    cfg = resolve_config(preset, config, overrides, extra=extra, plugin_options=plugin_options)
    validate_plugin_choices(cfg)
    if from_run is not None and not from_run.is_dir():
        raise ConfigError(f"--from {from_run}: no such run folder")
    run_name = name or default_name(cfg.model.resampler.name, cfg.model.loss.name, cfg.seed)
    result = run_engine(
        cfg, out / run_name, stages=wanted, model_factory=CoraModel.from_config, resume=resume, from_run=from_run,
        feature_cache_dir=feature_cache, plain_progress=plain,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"run finished in {result.seconds:.0f}s: {out / run_name}")
        typer.echo(f"summary: {out / run_name / 'summary.md'}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
