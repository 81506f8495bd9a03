"""``cora-kit eval``: score caption predictions; ``cora-kit eval setup-wordnet``.

    cora-kit eval --predictions preds.jsonl --references refs.jsonl [--metrics a,b] [--json]
    cora-kit eval --run runs/NAME            # runs/NAME/predictions.jsonl + references.jsonl
    cora-kit eval --run runs/NAME --protocol paper   # the CORA paper's per-row scoring
    cora-kit eval setup-wordnet [--source /usr/share/wordnet] [--dest ~/nltk_data]

A run folder holds ``predictions.jsonl`` (``{"id", "prediction"}``) and, written beside it
by ``cora-kit run``, ``references.jsonl`` (``{"id", "references": [...]}``: all references
of each (image, query) of the dataset's test split). ``--run`` does not touch the run's
own ``scores.json`` (written by ``cora-kit run``, with its control conditions); ``--out``
writes the ``--json`` object to a file. File formats: ``cora_kit.eval.scoring``;
protocols (``grouped``, ``paper``): ``cora_kit.eval.protocols``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cora_kit.errors import CoraKitError
from cora_kit.eval import scoring

eval_app = typer.Typer(
    name="eval",
    invoke_without_command=True,
    help="Score caption predictions against grouped references (BLEU-4, METEOR, ROUGE-L,"
    " CIDEr, SPICE, ...).",
)


def _metric_params(names: list[str], timeout: float | None, corenlp: Path | None) -> dict:
    """Per-metric plugin params for the options that apply to it."""
    from cora_kit.registry import REGISTRY

    params: dict[str, dict[str, Any]] = {}
    for name in names:
        spec = REGISTRY.lookup("metric", name)
        fields = spec.params_model.model_fields if spec.params_model else {}
        chosen: dict[str, Any] = {}
        if timeout is not None and "timeout_s" in fields:
            chosen["timeout_s"] = timeout
        if corenlp is not None and "corenlp_dir" in fields:
            chosen["corenlp_dir"] = str(corenlp)
        params[name] = chosen
    return params


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from cora_kit.fs import write_text_atomic

    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


_NOT_METRICS = ("protocol", "num_items", "num_rows", "unavailable", "implementations", "truncated")


def _print_table(payload: dict[str, Any], title: str) -> None:
    console = Console()
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("note")
    notes = payload.get("implementations", {})
    for name, value in payload.items():
        if name in _NOT_METRICS:
            continue
        if value is None:
            table.add_row(escape(name), "[red]NaN[/]", escape(payload["unavailable"].get(name, "")))
        else:
            table.add_row(escape(name), f"{value:.4f}", escape(notes.get(name, "")))
    console.print(table)


def _input_files(predictions: Path | None, references: Path | None, run: Path | None) -> tuple[Path, Path]:
    """--predictions/--references, or the files of a --run folder (explicit ones win)."""
    if run is not None:
        if not run.is_dir():
            raise CoraKitError(f"run folder {run} not found")
        predictions = predictions or run / "predictions.jsonl"
        if references is None:
            references = run / "references.jsonl"
            if not references.is_file():
                raise CoraKitError(
                    f"{references} not found: 'cora-kit run' writes it beside predictions.jsonl;"
                    " pass --references to score against another file"
                )
    if predictions is None or references is None:
        raise CoraKitError(
            "give --predictions and --references, or --run runs/NAME"
            " (see 'cora-kit eval --help')"
        )
    return predictions, references


@eval_app.callback()
def eval_command(
    ctx: typer.Context,
    predictions: Path = typer.Option(
        None, "--predictions", "-p", help='JSONL rows {"id", "prediction"}.'
    ),
    references: Path = typer.Option(
        None,
        "--references",
        "-r",
        help='JSONL rows {"id", "references": [...]} or {"id", "reference"} (grouped).',
    ),
    run: Path = typer.Option(
        None, "--run", help="Run folder: its predictions.jsonl and references.jsonl."
    ),
    metrics: str = typer.Option(
        ",".join(scoring.DEFAULT_METRICS), "--metrics", "-m", help="Comma-separated metric names."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (NaN as null)."),
    out: Path = typer.Option(
        None, "--out", help="Also write the JSON object to this file."
    ),
    timeout: float = typer.Option(
        None, "--timeout", help="Seconds before a java metric is killed (default 600)."
    ),
    spice_corenlp_dir: Path = typer.Option(
        None,
        "--spice-corenlp-dir",
        help="Folder with stanford-corenlp-3.6.0(-models).jar for SPICE"
        " (or $CORA_KIT_SPICE_CORENLP_DIR).",
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail instead of reporting NaN."),
    max_chars: int = typer.Option(
        scoring.MAX_CAPTION_CHARS, "--max-chars", min=1,
        help="Captions longer than this many characters are truncated (with a warning) before scoring.",
    ),
    protocol: str = typer.Option(
        "grouped", "--protocol",
        help="grouped: each prediction against all references of its (image, query) (default);"
        " paper: every reference row alone, with the CORA paper's implementations (sacrebleu BLEU-4,"
        " NLTK METEOR, rouge-score ROUGE-L, pycocoevalcap CIDEr/SPICE).",
    ),
) -> None:
    """Score predictions: --predictions + --references, or --run runs/NAME."""
    if ctx.invoked_subcommand is not None:
        return
    predictions, references = _input_files(predictions, references, run)
    from cora_kit.eval import protocols

    protocols.check_protocol(protocol)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise CoraKitError("--metrics is empty")
    plugins = names if protocol == "grouped" else [
        *(protocols.PAPER_METRICS[c][0] for c in protocols.paper_columns(names)), *protocols.grouped_extras(names)
    ]
    payload = protocols.score_protocol(
        scoring.read_predictions(predictions),
        scoring.read_references(references),
        protocol,
        names,
        params=_metric_params(plugins, timeout, spice_corenlp_dir),
        strict=strict,
        max_chars=max_chars,
        kinds=scoring.read_kinds(references) or None,
    )
    if payload.get("truncated"):
        t = payload["truncated"]
        Console(stderr=True).print(
            f"warning: {t['predictions']} prediction(s) and the references of {t['references']} id(s) were longer"
            f" than {t['max_chars']} characters and were truncated before scoring (--max-chars)",
            highlight=False, soft_wrap=True,
        )
    if out is not None:
        _write_json(out, payload)
    if as_json:
        typer.echo(json.dumps(payload))
        return
    rows = f", {payload['num_rows']} reference rows" if "num_rows" in payload else ""
    _print_table(payload, f"{predictions} ({payload['num_items']} predictions{rows}; protocol {protocol})")
    if out is not None:
        Console().print(f"wrote {out}", highlight=False, markup=False)


@eval_app.command("setup-wordnet")
def setup_wordnet_command(
    source: Path = typer.Option(
        None, "--source", help="WordNet 3.0 dict folder (default /usr/share/wordnet)."
    ),
    dest: Path = typer.Option(
        None, "--dest", help="nltk_data root to write into (default $NLTK_DATA or ~/nltk_data)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild an existing corpus."),
) -> None:
    """Build NLTK's WordNet corpus offline (for meteor-nltk) from Debian's wordnet-base."""
    import nltk

    from cora_kit.eval import wordnet

    target = wordnet.setup_wordnet(source or wordnet.DEFAULT_SOURCE, dest, force=force)
    version = wordnet.check_wordnet(target)
    typer.echo(f"WordNet {version} written to {target}")
    root = target.parent.parent.resolve()
    if not any(Path(p).expanduser().resolve() == root for p in nltk.data.path):
        typer.echo(f"NLTK does not search {root}: set NLTK_DATA={root}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
