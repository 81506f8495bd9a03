"""``cora-kit export --run runs/NAME --out DIR``: a self-contained model folder.

LoRA is merged into the LLM (peft ``merge_and_unload``); the LLM and encoder are saved
with ``save_pretrained``, resampler / projector / overlap head as safetensors, with the
resolved config (paths inside DIR) and plugins.json. ``cora-kit caption --model DIR``
loads it with no run folder and no hub. Logic: ``cora_kit.serving.export``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run: Path = typer.Option(..., "--run", help="Trained run folder (runs/NAME)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must not exist or be empty)."),
    from_runs: list[Path] = typer.Option([], "--from", help="Run folder holding earlier stages (runs trained with --from)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing non-empty --out folder."),
    dtype: str = typer.Option("fp32", "--dtype", help="Weight dtype of the files: fp32, or bf16 (half the size)."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code",
        help="Let transformers run Python files of the run's pretrained models (only if you trust them).",
    ),
) -> None:
    """Merge LoRA and write a self-contained model folder (safetensors only)."""
    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from cora_kit.commands.caption import warn_remote_code
    from cora_kit.serving.export import export_run
    from cora_kit.serving.export_format import summarize

    hf_logging.disable_progress_bar()
    if trust_remote_code:
        warn_remote_code(Console(stderr=True), run)
    folder = export_run(run, out, sources=tuple(from_runs), overwrite=overwrite, dtype=dtype,
                        trust_remote_code=trust_remote_code)
    sizes = summarize(folder)
    total = sum(sizes.values())
    typer.echo(f"exported {run} -> {folder} ({len(sizes)} weight files, {dtype}, {total / 2**20:.1f} MiB)")
    typer.echo(f"caption with: cora-kit caption PANO.jpg --model {folder}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
