"""``cora-kit caption``: caption panoramas with a trained run or an exported model.

    cora-kit caption pano.jpg [more.jpg folder/ ...] --run runs/NAME [--query "..."]
        [--beams N] [--max-new-tokens N] [--out captions.jsonl]
    cora-kit caption folder/ --model exported/

A folder argument captions its .png/.jpg/.jpeg files (sorted) with a progress bar.
Decoding defaults come from the model config's ``eval`` section. ``--out`` writes JSONL
rows ``{"image", "query", "caption"}``. Logic: ``cora_kit.serving``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _quiet_transformers() -> None:
    """No per-file 'Loading weights' bars from transformers in CLI output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def caption(
    images: list[Path] = typer.Argument(..., help="Panorama files (2:1 ERP) or folders of them."),
    run: Path = typer.Option(None, "--run", help="Trained run folder (runs/NAME)."),
    model: Path = typer.Option(None, "--model", help="Model folder written by `cora-kit export`."),
    query: str = typer.Option(
        None, "--query", "-q",
        help="Question asked about every panorama (default: the synthetic set's describe query,"
        " 'describe the object above the horizon').",
    ),
    beams: int = typer.Option(None, "--beams", min=1, help="Beam width (default: config eval.num_beams; 1 = greedy)."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="Default: config eval.max_new_tokens."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Default: config eval.batch_size."),
    out: Path = typer.Option(None, "--out", "-o", help='Write JSONL rows {"image", "query", "caption"}.'),
    from_runs: list[Path] = typer.Option([], "--from", help="Run folder holding earlier stages (runs trained with --from)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar for folder arguments."),
) -> None:
    """Caption panoramas with a trained run (--run) or an exported model (--model)."""
    from cora_kit import serving

    query = serving.DEFAULT_QUERY if query is None else query
    files = serving.panorama_files(images)  # missing paths fail before the model loads
    for f in files:
        serving.check_panorama(f)
    _quiet_transformers()
    net, info = serving.load_model(run=run, model_dir=model, device=device, sources=from_runs)
    err = Console(stderr=True)
    for note in info.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    show_bar = progress and any(Path(p).is_dir() for p in images)
    if show_bar:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("caption", total=len(files))
            rows = serving.caption_files(net, files, query, max_new_tokens, beams, batch_size,
                                           on_batch=lambda new: bar.advance(task, len(new)))
    else:
        rows = serving.caption_files(net, files, query, max_new_tokens, beams, batch_size)
    if out is not None:
        _write_jsonl(out, rows)
    table = Table(title=f"query: {query}", title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("caption", overflow="fold")
    for r in rows:
        table.add_row(escape(r["image"]), escape(r["caption"]) if r["caption"] else "[dim](empty)[/]")
    Console().print(table)
    if out is not None:
        err.print(f"wrote {len(rows)} captions to {out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("caption")(caption)
