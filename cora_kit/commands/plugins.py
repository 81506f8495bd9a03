"""``cora-kit plugins``: list every registered plugin and every load failure."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from cora_kit.hookspecs import KINDS
from cora_kit.registry import REGISTRY, PluginInfo
from cora_kit.errors import CoraKitError


def _param_count(info: PluginInfo) -> int | None:
    """Parameters of a resampler at its default config, built on the meta device."""
    import torch

    try:
        with torch.device("meta"):
            module = REGISTRY.create(info.kind, f"{info.distribution}:{info.name}")
    except Exception:
        return None
    if not isinstance(module, torch.nn.Module):
        return None
    return sum(p.numel() for p in module.parameters())


def plugins(
    kind: str = typer.Option(None, "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List plugins: name, kind, aliases, distribution, version, backend, status."""
    if kind is not None and kind not in KINDS:
        raise CoraKitError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
    infos = REGISTRY.list_plugins(kind)
    counts = {i.name: _param_count(i) for i in infos if i.kind == "resampler" and i.status == "ok"}
    if as_json:
        rows = []
        for info in infos:
            row = info.model_dump()
            if info.kind == "resampler":
                row["num_params"] = counts.get(info.name)
            rows.append(row)
        typer.echo(json.dumps(rows, indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or logged: do not cut names to 80 columns
        console = Console(width=200)
    table = Table(title="cora-kit plugins")
    for col in ("name", "kind", "aliases", "distribution", "version", "backend", "status"):
        table.add_column(col)
    if kind == "resampler":
        table.add_column("params (default)", justify="right")
    for info in infos:
        cells = [
            info.name,
            info.kind,
            ", ".join(info.aliases),
            info.distribution,
            info.version,
            info.backend or "",
            "[green]ok[/]" if info.status == "ok" else "[red]error[/]",
        ]
        if kind == "resampler":
            n = counts.get(info.name)
            cells.append(f"{n:,}" if n is not None else "?")
        table.add_row(*cells)
    console.print(table)
    problems = [i for i in infos if i.error]
    if problems:
        console.print("[bold]Problems:[/]")
        for info in problems:
            console.print(f"  {info.distribution} {info.name}: {info.error}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
