"""``cora-kit serve``: the captioning API and the 360-degree page over HTTP.

    cora-kit serve --run runs/NAME                      # http://127.0.0.1:8000/
    cora-kit serve --model exported/ --host 0.0.0.0 --token "$TOKEN" --max-batch 16

Binds 127.0.0.1 by default. Any other address needs ``--token`` (or ``CORA_KIT_TOKEN``):
every request must then carry ``Authorization: Bearer <token>`` (a browser opens
``/?token=<token>`` once). Logic: ``cora_kit.serving.server``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from cora_kit.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    run: Path = typer.Option(None, "--run", help="Trained run folder (runs/NAME)."),
    model: Path = typer.Option(None, "--model", help="Model folder written by `cora-kit export`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    token: str = typer.Option(None, "--token", envvar="CORA_KIT_TOKEN",
                              help="Require 'Authorization: Bearer TOKEN' on every request (env CORA_KIT_TOKEN)."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Most requests captioned in one batch."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests that may wait; more get 503."),
    max_upload_mb: float = typer.Option(32.0, "--max-upload-mb", min=0.001, help="Largest image upload (413 above)."),
    max_pixels: int = typer.Option(None, "--max-pixels", min=1,
                                   help="Most pixels per panorama, checked before decoding (default 67,108,864)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Seconds a request may take (504 after)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA), fp32 or bf16."),
    from_runs: list[Path] = typer.Option([], "--from", help="Run folder holding earlier stages (runs trained with --from)."),
) -> None:
    """Serve a trained run (--run) or an exported model (--model): HTTP API and 360-degree page."""
    if (run is None) == (model is None):
        raise ConfigError("give exactly one of --run RUN_DIR or --model EXPORTED_DIR")
    if not is_loopback(host) and not token:
        raise ConfigError(f"--host {host} is reachable from other machines: set --token (or CORA_KIT_TOKEN)"
                          " so that every request must carry it, or bind 127.0.0.1")
    if token is not None and len(token) < 8:
        raise ConfigError("--token must be at least 8 characters")
    try:
        import uvicorn

        from cora_kit.serving.server import ServeSettings, create_app
    except ImportError as exc:
        raise ConfigError(f"cora-kit serve needs FastAPI and uvicorn ({exc.name} is missing):"
                          " pip install 'cora-kit[serve]'") from None
    from cora_kit.commands.caption import _quiet_transformers
    from cora_kit.serving import Captioner
    from cora_kit.serving.uploads import DEFAULT_MAX_PIXELS

    _quiet_transformers()
    cap = (Captioner.from_run(run, device=device, sources=from_runs, precision=precision) if run is not None
           else Captioner.from_export(model, device=device, precision=precision))
    settings = ServeSettings(token=token, max_batch=max_batch, max_queue=max_queue, max_upload_mb=max_upload_mb,
                             max_pixels=max_pixels or DEFAULT_MAX_PIXELS, timeout_s=timeout)
    app = create_app(cap, settings)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {cap.info.source} ({cap.describe()['device']}, {cap.describe()['precision']}) at"
               f" http://{shown}:{port}/" + ("  (token required)" if token else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
