"""``cora-kit plugins``: list every registered plugin and every load failure.

Status: ``ok``; ``unavailable`` (a metric whose backend is missing here, e.g. SPICE without
Stanford CoreNLP: the reason is listed, and its scores are NaN with that reason); ``error``
(a distribution that failed to load). Resamplers show their parameter count at the default
config (built on the meta device), keyed by ``dist:name`` so two plugins of one name from two
distributions each show their own.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cora_kit.errors import CoraKitError
from cora_kit.hookspecs import KINDS
from cora_kit.registry import REGISTRY, PluginInfo

_STATUS_STYLE = {"ok": "green", "unavailable": "yellow", "error": "red"}


def _qualified(info: PluginInfo) -> str:
    return f"{info.distribution}:{info.name}"


def _param_count(info: PluginInfo) -> int | None:
    """Parameters of a resampler at its default config, built on the meta device."""
    import torch

    try:
        with torch.device("meta"):
            module = REGISTRY.create(info.kind, _qualified(info))
    except Exception:
        return None
    if not isinstance(module, torch.nn.Module):
        return None
    return sum(p.numel() for p in module.parameters())


def _with_availability(info: PluginInfo) -> PluginInfo:
    """A metric that cannot run here becomes status ``unavailable`` with its reason."""
    if info.kind != "metric" or info.status != "ok":
        return info
    from cora_kit.eval.scoring import metric_unavailable_reason

    reason = metric_unavailable_reason(_qualified(info))
    if reason is None:
        return info
    return info.model_copy(update={"status": "unavailable", "error": reason})


def collect(kind: str | None) -> tuple[list[PluginInfo], dict[str, int | None]]:
    """Plugin infos (availability checked) and resampler parameter counts by ``dist:name``."""
    infos = [_with_availability(i) for i in REGISTRY.list_plugins(kind)]
    counts = {_qualified(i): _param_count(i) for i in infos if i.kind == "resampler" and i.status == "ok"}
    return infos, counts


def _table(infos: list[PluginInfo], counts: dict[str, int | None], kind: str | None) -> Table:
    table = Table(title="cora-kit plugins")
    for col in ("name", "kind", "aliases", "distribution", "version", "backend", "status"):
        table.add_column(col)
    if kind == "resampler":
        table.add_column("params (default)", justify="right")
    for info in infos:
        style = _STATUS_STYLE.get(info.status, "red")
        cells = [escape(info.name), info.kind, escape(", ".join(info.aliases)), escape(info.distribution),
                 escape(info.version), escape(info.backend or ""), f"[{style}]{info.status}[/]"]
        if kind == "resampler":
            n = counts.get(_qualified(info))
            cells.append(f"{n:,}" if n is not None else "?")
        table.add_row(*cells)
    return table


def plugins(
    kind: str = typer.Option(None, "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List plugins: name, kind, aliases, distribution, version, backend, status."""
    if kind is not None and kind not in KINDS:
        raise CoraKitError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
    infos, counts = collect(kind)
    if as_json:
        rows = []
        for info in infos:
            row = info.model_dump()
            if info.kind == "resampler":
                row["num_params"] = counts.get(_qualified(info))
            rows.append(row)
        typer.echo(json.dumps(rows, indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or logged: do not cut names to 80 columns
        console = Console(width=200)
    console.print(_table(infos, counts, kind))
    problems = [i for i in infos if i.error]
    if problems:
        console.print("[bold]Problems:[/]")
        for info in problems:
            console.print(f"  {info.distribution} {info.name}: {info.error}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
