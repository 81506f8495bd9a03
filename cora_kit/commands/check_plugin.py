"""``cora-kit check-plugin``: run ``cora_kit.testing``'s conformance checks on plugins."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cora_kit.errors import CoraKitError, UnknownPluginError
from cora_kit.hookspecs import KINDS
from cora_kit.registry import REGISTRY, canonical_dist

_STYLE = {"passed": "green", "failed": "bold red", "skipped": "yellow", "xfailed": "magenta"}


def _parse_params(items: list[str]) -> dict[str, Any]:
    """``["hidden_dim=64", "bias=false"]`` -> ``{"hidden_dim": 64, "bias": False}`` (YAML scalars)."""
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CoraKitError(f"--param expects KEY=VALUE; got '{item}'")
        params[key.strip()] = yaml.safe_load(value)
    return params


def resolve_targets(name: str | None, kind: str | None, dist: str | None) -> list[tuple[str, str]]:
    """``(kind, dist:name)`` pairs to check: one name (in one or every kind) or a distribution."""
    if kind is not None and kind not in KINDS:
        raise CoraKitError(f"unknown plugin kind '{kind}'; kinds: {', '.join(KINDS)}")
    kinds = [kind] if kind else list(KINDS)
    if dist is not None:
        specs = [s for s in REGISTRY.specs(kind) if canonical_dist(s.distribution) == canonical_dist(dist)]
        if name is not None:
            specs = [s for s in specs if name in (s.name, *s.aliases)]
        if not specs:
            known = sorted({s.distribution for s in REGISTRY.specs()})
            raise CoraKitError(
                f"no {kind or 'plugin'} {repr(name) + ' ' if name else ''}registered by distribution '{dist}'"
                f" (distributions: {', '.join(known)}; see 'cora-kit plugins')"
            )
        return [(s.kind, s.qualified_name) for s in specs]
    if name is None:
        raise CoraKitError("give a plugin NAME (or dist:name), or --dist DISTRIBUTION")
    found: list[tuple[str, str]] = []
    errors: list[UnknownPluginError] = []
    for k in kinds:
        try:
            found.append((k, REGISTRY.lookup(k, name).qualified_name))
        except UnknownPluginError as exc:
            errors.append(exc)
    if not found:
        raise errors[0] if kind else CoraKitError(f"no plugin of any kind is named '{name}' (see 'cora-kit plugins')")
    return found


def check_plugin(
    name: str = typer.Argument(None, help="Plugin name, alias or dist:name."),
    kind: str = typer.Option(None, "--kind", "-k", help=f"One of: {', '.join(KINDS)}."),
    dist: str = typer.Option(None, "--dist", "-d", help="Check every plugin of this distribution."),
    param: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE parameter override (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON results instead of tables."),
) -> None:
    """Run the conformance checks (shapes, dtypes, determinism, gradients, safetensors,
    params) on plugins; exit 1 if any check fails."""
    from cora_kit.testing import run_checks

    params = _parse_params(param)
    targets = resolve_targets(name, kind, dist)
    all_results = [(k, q, run_checks(k, q, params)) for k, q in targets]
    failed = [r for _, _, results in all_results for r in results if r.status == "failed"]
    if as_json:
        typer.echo(json.dumps([r.__dict__ for _, _, rs in all_results for r in rs], indent=2))
    else:
        console = Console()
        for k, qualified, results in all_results:
            table = Table(title=escape(f"{k} {qualified}"), title_justify="left")
            table.add_column("check", no_wrap=True)
            table.add_column("status", no_wrap=True)
            table.add_column("message", overflow="fold")
            table.add_column("s", justify="right")
            for r in results:
                # messages are plain text (shapes like [2, 256, 48]): never rich markup
                table.add_row(r.check, f"[{_STYLE[r.status]}]{r.status}[/]", escape(r.message), f"{r.seconds:.2f}")
            console.print(table)
        n = sum(len(rs) for _, _, rs in all_results)
        summary = f"{len(targets)} plugin(s), {n} checks, {len(failed)} failed"
        console.print(f"[bold red]FAILED[/] {summary}" if failed else f"[bold green]OK[/] {summary}")
        for r in failed:  # plain lines: easy to grep in CI logs
            typer.echo(f"FAILED {r.kind} {r.plugin} {r.check}: {r.message}", err=True)
    if failed:
        # SystemExit, not typer.Exit: click (standalone_mode=False) turns Exit into a return
        # value that cora_kit.cli.main drops.
        raise SystemExit(1)


def register(app: typer.Typer) -> None:
    app.command("check-plugin")(check_plugin)
