"""The ``cora-kit`` command line (Typer + rich), thin over the Python API.

Command groups live in ``cora_kit/commands/<name>.py``; each defines
``register(app: typer.Typer) -> None`` and is listed in ``COMMAND_MODULES``.
Every ``CoraKitError`` becomes a one-line message on stderr and exit code 2, and so does an
``OSError`` of the machine (disk full, permission denied, read-only file system).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from cora_kit.errors import CoraKitError

COMMAND_MODULES: tuple[str, ...] = (
    "plugins", "config", "check_plugin", "new_plugin", "data", "eval", "bench", "run", "tile", "model_summary",
    "caption", "export", "serve", "cache",
)

app = typer.Typer(
    name="cora-kit",
    help="Build, train, compare and run CORA-family 360-degree panorama VLMs from plugins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        from cora_kit import __version__

        typer.echo(f"cora-kit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """cora-kit: plugin-registry toolkit for 360-degree panorama VLMs."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"cora_kit.commands.{_name}").register(app)


def _click_exception_modules() -> list[Any]:
    """``click.exceptions`` and, where typer vendors click (``typer._click``), its copy."""
    import importlib

    out = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            out.append(importlib.import_module(name))
        except ImportError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors -> one line on stderr, exit 2."""
    try:
        rc = app(args=argv, prog_name="cora-kit", standalone_mode=False)
    except CoraKitError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as exc:  # typer.Exit inside commands
        return int(exc.code or 0)
    except OSError as exc:  # disk full, permission denied, read-only: the machine's, not a bug
        from cora_kit.fs import STORAGE_ERRNOS, storage_error

        if exc.errno not in STORAGE_ERRNOS:
            raise
        err_console.print(f"[bold red]error:[/] {storage_error(exc, exc.filename, None)}", highlight=False,
                          soft_wrap=True)
        return 2
    except Exception as exc:  # click usage errors (typer may vendor its own click)
        for exceptions in _click_exception_modules():
            if isinstance(exc, exceptions.ClickException):
                exc.show()
                return 2
            abort, exit_ = getattr(exceptions, "Abort", ()), getattr(exceptions, "Exit", ())  # not in typer 0.29's
            if isinstance(exc, abort):
                return 130
            if isinstance(exc, exit_):
                return int(exc.exit_code)
        raise
    # with standalone_mode=False click returns typer.Exit(n)'s code instead of exiting
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
