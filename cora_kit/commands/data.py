"""``cora-kit data synth|card|check|fetch|show``: the synthetic set and its chance levels,
loading reports, downloads, one item as a PNG."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cora_kit.errors import DataError

data_app = typer.Typer(
    help="Datasets: generate the synthetic set, check and show items.", no_args_is_help=True
)

_ON_BAD_ROW = typer.Option(
    "error", "--on-bad-row", help="error: stop at the first bad row; skip: drop it and count it."
)
_IMAGE_ROOT = typer.Option(None, "--image-root", help="Folder with the images (URLs map to it by file name).")


@data_app.command("synth")
def synth(
    out: Path = typer.Option(Path("data/synth"), "--out", "-o", help="Output folder."),
    n_train: int = typer.Option(2000, "--n-train", min=0),
    n_val: int = typer.Option(200, "--n-val", min=0),
    n_test: int = typer.Option(200, "--n-test", min=0),
    size: str = typer.Option("512x1024", "--size", help="ERP size HEIGHTxWIDTH (2:1)."),
    seed: int = typer.Option(0, "--seed"),
    queries_per_image: int = typer.Option(
        None, "--queries-per-image", min=1, help="Default: the version's (v1: 2, v2: 4 of distinct kinds)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing set with other parameters."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Processes rendering images (same files)."),
    version: int = typer.Option(
        2, "--version", min=1, max=2, help="Generator version: 2 (query kinds, data card) or 1 (reproduces v1 sets)."
    ),
) -> None:
    """Generate the deterministic synthetic 360-degree query-captioning set (or reuse it)."""
    from cora_kit.data.synth import (
        SPLITS,
        SynthParams,
        ensure_synthetic,
        generate_synthetic,
        parse_size,
        read_metadata,
    )

    h, w = parse_size(size)
    t0 = time.perf_counter()
    if force and out.exists():
        params = SynthParams(n_train, n_val, n_test, h, w, seed, queries_per_image, version=version)
        generate_synthetic(out, params, overwrite=True, workers=workers)
        action = "generated"
    else:
        existed = out.exists()
        ensure_synthetic(out, n_train, n_val, n_test, (h, w), seed, queries_per_image, workers, version)
        action = "reused" if existed else "generated"
    meta = read_metadata(out)
    table = Table(title=f"synthetic set {action}: {out} ({time.perf_counter() - t0:.1f} s)")
    for col in ("split", "images", "samples", "reference rows"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split in SPLITS:
        c = meta["splits"][split]
        table.add_row(split, str(c["images"]), str(c["samples"]), str(c["rows"]))
    Console().print(table)


@data_app.command("card")
def card(
    preset: str = typer.Option(None, "--preset", "-p", help="Preset name (tiny, paper)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file layered over the preset."),
    overrides: list[str] = typer.Option([], "--set", help="Override one key, e.g. --set data.synth.n_train=500."),
) -> None:
    """Print the kind shares and chance levels (text prior) of the synthetic set that the
    resolved config's data.synth describes, as a markdown table; no image is rendered."""
    from cora_kit.config import resolve_config
    from cora_kit.data.card import chance_table
    from cora_kit.data.synth import SynthParams, synth_queries

    cfg = resolve_config(preset, config, overrides)
    s = cfg.data.synth
    if s.version < 2:
        raise DataError("data card needs the synthetic set v2 (data.synth.version: 2); v1 has no query kinds")
    params = SynthParams(s.n_train, s.n_val, s.n_test, s.height, s.width, s.seed, s.queries_per_image,
                         version=s.version)
    typer.echo(chance_table(synth_queries(params)))


def _report_skips(report) -> None:
    if report.skipped:
        Console(stderr=True).print(report.summary(), highlight=False, soft_wrap=True)


@data_app.command("check")
def check(
    path: Path = typer.Argument(..., help="A CSV, or a folder with <split>.csv (e.g. data/synth)."),
    split: str = typer.Option(None, "--split", help="Split to check (default: every split the folder has)."),
    image_root: Path = _IMAGE_ROOT,
    on_bad_row: str = _ON_BAD_ROW,
    stage1: bool = typer.Option(
        False, "--stage1", help="Load as Stage-1 images (a folder of panoramas works)."
    ),
) -> None:
    """Load the splits and print what was read and what was skipped (and why)."""
    from cora_kit.data.csv_loaders import SPLIT_FILES, find_split_file, load_images, load_split

    loader = load_images if stage1 else load_split
    if split is not None or not path.is_dir():
        splits = [split or "train"]
    else:
        splits = [k for k in SPLIT_FILES if _has_split(path, k, find_split_file)] or ["train"]
    for name in splits:
        report = loader(path, name, image_root, on_bad_row)
        typer.echo(report.summary())
        for line in report.problems[:20]:
            typer.echo(f"  {line}")
        if len(report.problems) > 20:
            typer.echo(f"  ... and {len(report.problems) - 20} more")


def _has_split(folder: Path, split: str, find) -> bool:
    try:
        find(folder, split)
    except DataError:
        return False
    return True


@data_app.command("fetch")
def fetch(
    src: Path = typer.Argument(..., help="Dataset folder (train/val/test CSVs, QuIC-360 columns) or one CSV."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write: images/, the CSVs, fetch-report.json."),
    workers: int = typer.Option(8, "--workers", "-j", min=1, help="Parallel downloads."),
    retries: int = typer.Option(3, "--retries", min=0, help="Extra attempts after a 5xx, connection error or timeout."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.001, help="Seconds to wait to connect / for data."),
    backoff: float = typer.Option(1.0, "--backoff", min=0.0, help="First retry waits this many seconds, then 2x each time."),
) -> None:
    """Download every image URL once (hash-named, resumable, checked 2:1) into a dataset folder.

    Exit 0 when every URL was fetched, 1 when some failed (fetch-report.json says which), 2 on bad input.
    """
    from cora_kit.data.fetch import REPORT_NAME, FetchOptions, fetch_dataset

    options = FetchOptions(workers=workers, retries=retries, timeout=timeout, backoff=backoff)
    console = Console(stderr=True)
    with _FetchProgress(console) as progress:
        report = fetch_dataset(src, out, options, progress=progress)
    typer.echo(
        f"{report.urls} URLs: {report.fetched} fetched, {report.already_present} already present, "
        f"{len(report.failed)} failed ({report.bytes_downloaded / 1e6:.1f} MB in {report.seconds:.1f} s); "
        f"report: {out / REPORT_NAME}"
    )
    for name, c in report.csvs.items():
        typer.echo(f"  {out / name}: {c['written']} of {c['rows']} rows")
    for f in report.failed[:10]:
        console.print(f"  failed: {f['url']}: {f['reason']}", highlight=False, soft_wrap=True)
    if len(report.failed) > 10:
        console.print(f"  ... and {len(report.failed) - 10} more (see {out / REPORT_NAME})", highlight=False)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


class _FetchProgress:
    """A rich progress bar for ``fetch_dataset``: images done / total, MB/s, images/s, ETA."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("fetch"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
            transient=False, disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("fetch", total=None, rate="")
        self.bytes = 0
        self.files = 0
        self.t0 = time.perf_counter()

    def __enter__(self) -> _FetchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: str, n: int) -> None:
        if event == "total":
            self.progress.update(self.task, total=n)
            return
        if event == "bytes":
            self.bytes += n
        elif event == "file":
            self.files += n
        dt = max(time.perf_counter() - self.t0, 1e-6)
        rate = f"{self.bytes / dt / 1e6:.1f} MB/s {self.files / dt:.1f} img/s"
        self.progress.update(self.task, advance=n if event == "file" else 0, rate=rate)


@data_app.command("show")
def show(
    path: Path = typer.Argument(..., help="A CSV, or a folder with <split>.csv (e.g. data/synth)."),
    index: int = typer.Option(0, "--index", "-i", min=0, help="Sample index in the split."),
    out: Path = typer.Option(Path("item.png"), "--out", "-o", help="PNG to write."),
    split: str = typer.Option("train", "--split"),
    image_root: Path = _IMAGE_ROOT,
    on_bad_row: str = _ON_BAD_ROW,
    tiler: str = typer.Option("e2p", "--tiler", help="Tiler plugin that makes the views."),
    view_size: int = typer.Option(128, "--view-size", min=16, help="Pixel size of each view in the figure."),
) -> None:
    """Render one item: the ERP, its views (as the tiler makes them), query and references."""
    import cora_kit
    from cora_kit.data.csv_loaders import load_split
    from cora_kit.data.show import render_item

    report = load_split(path, split, image_root, on_bad_row)
    _report_skips(report)
    if index >= len(report):
        raise DataError(f"{report.source}: index {index} out of range ({len(report)} samples)")
    tiler_obj = cora_kit.create("tiler", tiler, size=view_size)
    written = render_item(report[index], out, tiler_obj)
    typer.echo(f"wrote {written}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
