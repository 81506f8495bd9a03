"""``cora-kit caption``: caption panoramas with a trained run or an exported model.

    cora-kit caption pano.jpg [more.jpg folder/ ...] --run runs/NAME [--query "..."]
        [--beams N] [--max-new-tokens N] [--out captions.jsonl]
    cora-kit caption folder/ --model exported/
    cora-kit caption --queries questions.csv --run runs/NAME     # columns image,query

A folder argument captions its .png/.jpg/.jpeg files (sorted) with a progress bar.
Decoding defaults come from the model config's ``eval`` section. ``--out`` writes JSONL
rows ``{"image", "query", "caption", "seconds"}``. Logic: ``cora_kit.Captioner``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _quiet_transformers() -> None:
    """No per-file 'Loading weights' bars from transformers in CLI output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    from cora_kit.fs import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def warn_remote_code(err: Console, folder: Path | None) -> None:
    """The warning printed whenever --trust-remote-code is given."""
    err.print(
        f"warning: --trust-remote-code: Python files in {folder} may run with your permissions;"
        " use it only for model folders you trust", highlight=False, soft_wrap=True,
    )


def caption(
    images: list[Path] = typer.Argument(None, help="Panorama files (2:1 ERP) or folders of them."),
    run: Path = typer.Option(None, "--run", help="Trained run folder (runs/NAME)."),
    model: Path = typer.Option(None, "--model", help="Model folder written by `cora-kit export`."),
    query: str = typer.Option(
        None, "--query", "-q",
        help="Question asked about every panorama (default: the synthetic set's describe query,"
        " 'describe the object above the horizon').",
    ),
    queries: Path = typer.Option(
        None, "--queries",
        help="CSV with columns image,query: one question per row (an image may have several rows;"
        " relative paths resolve against the CSV's folder). Replaces the panorama arguments.",
    ),
    beams: int = typer.Option(None, "--beams", min=1, help="Beam width (default: config eval.num_beams; 1 = greedy)."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="Default: config eval.max_new_tokens."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Default: config eval.batch_size."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA), fp32 or bf16."),
    out: Path = typer.Option(None, "--out", "-o", help='Write JSONL rows {"image", "query", "caption", "seconds"}.'),
    from_runs: list[Path] = typer.Option([], "--from", help="Run folder holding earlier stages (runs trained with --from)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar for folders and --queries."),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code",
        help="Let transformers run Python files shipped in the model folder (only for folders you trust;"
        " a folder's own config never enables this).",
    ),
) -> None:
    """Caption panoramas with a trained run (--run) or an exported model (--model)."""
    from cora_kit import serving
    from cora_kit.errors import ConfigError

    if queries is not None:
        if images or query is not None:
            raise ConfigError("--queries FILE.csv lists the panoramas and their questions; drop the panorama arguments and --query")
        pairs = serving.read_queries_csv(queries)
        files, asked = [f for f, _ in pairs], [q for _, q in pairs]
    else:
        if not images:
            raise ConfigError("give panorama files or folders, or --queries FILE.csv")
        files = serving.panorama_files(images)  # missing paths fail before the model loads
        asked = [serving.DEFAULT_QUERY if query is None else query] * len(files)
    for f in files:
        serving.check_panorama(f)
    _quiet_transformers()
    if (run is None) == (model is None):
        raise ConfigError("give exactly one of --run RUN_DIR or --model EXPORTED_DIR")
    options = {"precision": precision, "max_new_tokens": max_new_tokens, "num_beams": beams, "batch_size": batch_size}
    err = Console(stderr=True)
    if trust_remote_code:
        warn_remote_code(err, run or model)
    cap = (serving.Captioner.from_run(run, device=device, sources=from_runs, trust_remote_code=trust_remote_code,
                                      **options) if run is not None
           else serving.Captioner.from_export(model, device=device, trust_remote_code=trust_remote_code, **options))
    for note in cap.info.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    show_bar = progress and (queries is not None or any(Path(p).is_dir() for p in images))
    if show_bar:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("captioning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("caption", total=len(files))
            results = cap.caption(files, asked, on_batch=lambda new: bar.advance(task, len(new)))
    else:
        results = cap.caption(files, asked)
    rows = [r.to_dict() for r in results]
    if out is not None:
        _write_jsonl(out, rows)
    one_query = len(set(asked)) == 1
    table = Table(title=f"query: {escape(asked[0])}" if one_query else None, title_justify="left")
    table.add_column("image", overflow="fold")
    if not one_query:
        table.add_column("query", overflow="fold")
    table.add_column("caption", overflow="fold")
    for r in results:
        cells = [escape(r.image or ""), *([] if one_query else [escape(r.query)]),
                 escape(r.caption) if r.caption else "[dim](empty)[/]"]
        table.add_row(*cells)
    Console().print(table)
    total = sum(r.seconds for r in results)
    err.print(f"{len(results)} caption(s) in {total:.2f} s on {cap.device} ({cap.describe()['precision']})",
              highlight=False, markup=False)
    if out is not None:
        err.print(f"wrote {len(rows)} captions to {out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("caption")(caption)
