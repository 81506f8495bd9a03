"""``cora-kit config show``: print the resolved configuration as YAML."""

from __future__ import annotations

from pathlib import Path

import typer

from cora_kit.config import resolve_config, to_yaml

config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


@config_app.command("show")
def show(
    preset: str = typer.Option(None, "--preset", "-p", help="Preset name (tiny, paper)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file layered over the preset."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override one key, e.g. --set stages.stage2.lr=3e-4 (repeatable)."
    ),
) -> None:
    """Print the config after defaults < preset < --config < --set."""
    typer.echo(to_yaml(resolve_config(preset, config, overrides)), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
