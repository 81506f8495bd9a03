"""``cora-kit cache info DIR`` and ``cora-kit cache prune DIR``: the feature cache's
namespaces (size, entries, last use) and removing the unused ones.
Logic: ``cora_kit.train.cache_admin``."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

cache_app = typer.Typer(help="Inspect and prune a feature-cache folder.", no_args_is_help=True)


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)  # piped: do not cut ids


def _table(found: list, title: str) -> Table:
    from cora_kit.train.cache_admin import human_age, human_bytes

    now = time.time()
    table = Table(title=title, title_justify="left")
    for col in ("namespace", "kind", "dtype", "entries", "size", "per entry", "last use"):
        table.add_column(col, justify="left" if col in ("namespace", "kind", "dtype", "last use") else "right")
    for n in found:
        per = human_bytes(n.bytes / n.entries) if n.entries else "-"
        when = datetime.fromtimestamp(n.last_used).strftime("%Y-%m-%d %H:%M")
        table.add_row(n.id, n.kind or "?", n.dtype, f"{n.entries:,}", human_bytes(n.bytes), per,
                      f"{when} ({human_age(now - n.last_used)})")
    return table


@cache_app.command("info")
def info(
    directory: Path = typer.Argument(..., help="Feature-cache folder (default of a run: <out>/.feature-cache)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Size, entries and last use of every namespace (one per encoder/tiler/dtype key)."""
    from cora_kit.train.cache_admin import human_bytes, namespaces

    found, foreign = namespaces(directory)
    total = sum(n.bytes for n in found)
    if as_json:
        typer.echo(json.dumps({"directory": str(directory), "total_bytes": total,
                               "namespaces": [n.to_json() for n in found],
                               "foreign": [str(p) for p in foreign]}, indent=2))
        return
    console = _console()
    if not found:
        console.print(f"{directory}: no feature-cache namespaces", highlight=False)
    else:
        console.print(_table(found, f"{directory}: {len(found)} namespace(s), {human_bytes(total)}"))
    for p in foreign:
        console.print(f"note: {p} is not a cora-kit cache namespace (left alone)", highlight=False)


@cache_app.command("prune")
def prune_command(
    directory: Path = typer.Argument(..., help="Feature-cache folder."),
    keep: list[str] = typer.Option(
        [], "--keep-namespaces", help="Namespaces to keep (ids or unique prefixes; repeatable or comma-separated)."
    ),
    older_than: str = typer.Option(None, "--older-than", help="Remove namespaces last used longer ago, e.g. 30d, 12h."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
) -> None:
    """Delete whole namespaces: every one not kept, or (with --older-than) the not-kept
    ones last used longer ago than that. Runs recompute whatever they miss."""
    from cora_kit.train.cache_admin import human_bytes, prune

    ids = [part for text in keep for part in text.split(",") if part.strip()]
    removed, kept = prune(directory, ids, older_than, dry_run=dry_run)
    console = _console()
    if removed:
        verb = "would remove" if dry_run else "removed"
        console.print(_table(removed, f"{verb} {len(removed)} namespace(s), {human_bytes(sum(n.bytes for n in removed))}"))
    else:
        console.print("nothing to remove", highlight=False)
    console.print(f"kept {len(kept)} namespace(s), {human_bytes(sum(n.bytes for n in kept))}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
