"""``cora-kit data fetch``: turn a CSV of image URLs (QuIC-360, CORA) into a local dataset folder.

``fetch_dataset(src, out)`` reads the CSVs of ``src`` (a dataset folder with
``train.csv`` / ``val.csv`` / ``test.csv`` / ``stage1_*.csv``, or one CSV), downloads every
distinct http(s) URL once, in parallel, and writes ``out`` as a dataset folder::

    out/images/<sha256 of the URL>.<format>   the images (never named after the URL's basename)
    out/<same CSV names>                      rows rewritten: column ``url`` holds the local path
                                              (relative to ``out``), ``source_url`` the original
    out/fetch-report.json                     {"fetched", "already_present", "failed": [{url, reason}], ...}

Each download (``cora_kit.data.download``) goes to ``images/.<hash>.part`` and is renamed
only once complete and checked (it decodes, and is 2:1 within
``cora_kit.data.images.ASPECT_TOLERANCE``, the tolerance of every ERP reader), so an
interrupted fetch never leaves a partial file under a final name; the next run skips complete
files and continues a ``.part`` with an HTTP range request where the server allows it.
Transient failures (5xx, connection errors, timeouts, a body cut short) are retried with
exponential backoff; a 4xx never is. Rows whose image failed are left out of the rewritten
CSVs (the report says why). A row whose ``url`` is a local path keeps it (made absolute), if
the file exists.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from cora_kit.data.csv_loaders import SPLIT_FILES
from cora_kit.data.download import (
    USER_AGENT,
    Downloader,
    FetchOptions,
    PermanentError,
    TransientError,
    find_complete,
    url_file_stem,
)
from cora_kit.errors import DataError

REPORT_NAME = "fetch-report.json"
IMAGES_DIR = "images"
URL_COLUMN = "url"
SOURCE_COLUMN = "source_url"


@dataclass
class SourceCsv:
    """One input CSV: its header, rows and the index of the ``url`` column."""

    name: str
    path: Path
    header: list[str]
    rows: list[list[str]]
    url_index: int
    source_index: int | None


@dataclass
class FetchReport:
    """What a fetch did; ``to_json()`` is ``fetch-report.json``."""

    source: str
    out: str
    urls: int = 0
    fetched: int = 0
    already_present: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    bytes_downloaded: int = 0
    csvs: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """0: every URL is on disk; 1: some failed (or the fetch was interrupted)."""
        return 1 if (self.failed or self.interrupted) else 0

    def to_json(self) -> dict:
        return {
            "source": self.source, "out": self.out, "urls": self.urls, "fetched": self.fetched,
            "already_present": self.already_present, "failed": list(self.failed),
            "bytes_downloaded": self.bytes_downloaded, "csvs": self.csvs,
            "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
        }


# --- reading the sources ------------------------------------------------------------


def is_http_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https")


def _source_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DataError(f"{src}: no such file or folder")
    names = [n for names in SPLIT_FILES.values() for n in names]
    names += [f"stage1_{n}" for n in names]
    found = [src / n for n in names if (src / n).is_file()]
    if not found:
        raise DataError(f"{src}: no dataset CSV ({', '.join(names)})")
    return found


def _read_csv(path: Path) -> SourceCsv:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: row 1: empty file, expected a header") from None
    except csv.Error as exc:
        raise DataError(f"{path}: row 1: not a readable CSV ({exc})") from None
    lowered = [h.strip().lower() for h in header]
    if URL_COLUMN not in lowered:
        raise DataError(f"{path}: row 1: missing column 'url'; found columns ({', '.join(lowered)})")
    rows: list[list[str]] = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                if len(fields) < len(header):
                    raise DataError(
                        f"{path}: row {reader.line_num}: has {len(fields)} fields, header has {len(header)}"
                    )
                rows.append(fields)
    except csv.Error as exc:
        raise DataError(f"{path}: row {reader.line_num}: not a valid CSV row ({exc})") from None
    source_index = lowered.index(SOURCE_COLUMN) if SOURCE_COLUMN in lowered else None
    return SourceCsv(path.name, path, header, rows, lowered.index(URL_COLUMN), source_index)


def read_sources(src: str | Path) -> list[SourceCsv]:
    """Every CSV of ``src`` (a dataset folder or one CSV); a bad file is a ``DataError``."""
    return [_read_csv(p) for p in _source_files(Path(src))]


def distinct_urls(sources: list[SourceCsv]) -> list[str]:
    """The http(s) URLs of every row, each once, in order of first appearance."""
    seen: dict[str, None] = {}
    for s in sources:
        for row in s.rows:
            url = row[s.url_index].strip()
            if is_http_url(url):
                seen.setdefault(url)
    return list(seen)


# --- the whole fetch ----------------------------------------------------------------------


ProgressFn = Callable[[str, int], None]  # (event "file" | "bytes" | "total", amount)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def _local_row_path(value: str, csv_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (csv_dir / p).resolve()


def _write_csvs(sources: list[SourceCsv], out: Path, local: dict[str, str], report: FetchReport) -> None:
    """The CSVs with ``url`` -> local path and a ``source_url`` column; rows left out where
    the image is missing."""
    for s in sources:
        header = list(s.header) + ([] if s.source_index is not None else [SOURCE_COLUMN])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        kept = 0
        for row in s.rows:
            url = row[s.url_index].strip()
            path = local.get(url)
            if path is None and url and not is_http_url(url):
                candidate = _local_row_path(url, s.path.parent)
                path = str(candidate) if candidate.is_file() else None
            if path is None:
                continue
            new = list(row)
            new[s.url_index] = path
            if s.source_index is None:
                new.append(url)
            writer.writerow(new)
            kept += 1
        _atomic_write(out / s.name, buf.getvalue())
        report.csvs[s.name] = {"rows": len(s.rows), "written": kept, "left_out": len(s.rows) - kept}


def _local_failures(sources: list[SourceCsv]) -> list[dict[str, str]]:
    """Rows whose ``url`` is neither an http(s) URL nor an existing local file."""
    failed: dict[str, str] = {}
    for s in sources:
        for row in s.rows:
            url = row[s.url_index].strip()
            if not url:
                failed.setdefault("", f"{s.name}: empty 'url'")
            elif is_http_url(url):
                continue
            elif urlparse(url).scheme in ("ftp", "s3", "gs", "file", "data") or "://" in url:
                failed.setdefault(url, f"scheme '{urlparse(url).scheme}' is not fetched (http/https only)")
            elif not _local_row_path(url, s.path.parent).is_file():
                failed.setdefault(url, f"local file not found (relative to {s.path.parent})")
    return [{"url": u, "reason": r} for u, r in failed.items()]


def fetch_dataset(
    src: str | Path, out: str | Path, options: FetchOptions = FetchOptions(),
    progress: ProgressFn | None = None,
) -> FetchReport:
    """Fetch every image of ``src`` into ``out`` (see the module docstring); bad input is a
    ``DataError`` before anything is written. Ctrl-C stops the downloads, keeps the partial
    files for the next run, writes the report (``interrupted``) and re-raises."""
    import httpx

    if options.workers < 1 or options.retries < 0 or options.timeout <= 0 or options.backoff < 0:
        raise DataError(f"bad fetch options {options}: workers >= 1, retries >= 0, timeout > 0, backoff >= 0")
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    sources = read_sources(src)
    out_resolved = out.resolve()
    for s in sources:
        if s.path.parent.resolve() == out_resolved:
            raise DataError(f"--out {out} is the folder of {s.path}: fetch into another folder")
    urls = distinct_urls(sources)
    report = FetchReport(source=str(src), out=str(out), urls=len(urls))
    report.failed.extend(_local_failures(sources))
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda event, n: None)
    say("total", len(urls))

    local: dict[str, str] = {}
    todo: list[str] = []
    for url in urls:
        found = find_complete(images, url_file_stem(url))
        if found is not None:
            local[url] = f"{IMAGES_DIR}/{found.name}"
            report.already_present += 1
            say("file", 1)
        else:
            todo.append(url)

    stop = threading.Event()
    lock = threading.Lock()

    def count_bytes(n: int) -> None:
        with lock:
            report.bytes_downloaded += n
        say("bytes", n)

    timeout = httpx.Timeout(options.timeout)
    limits = httpx.Limits(max_connections=options.workers, max_keepalive_connections=options.workers)
    # identity: the bytes on the wire are the file's, so a range request continues a .part
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    try:
        with httpx.Client(timeout=timeout, limits=limits, follow_redirects=True, headers=headers) as client:
            download = Downloader(client, images, options, stop, count_bytes)
            with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="fetch") as pool:
                futures = {pool.submit(download, url): url for url in todo}
                try:
                    for future in as_completed(futures):
                        url = futures[future]
                        try:
                            path, _ = future.result()
                        except (TransientError, PermanentError) as exc:
                            report.failed.append({"url": url, "reason": str(exc)})
                        else:
                            local[url] = f"{IMAGES_DIR}/{path.name}"
                            report.fetched += 1
                        say("file", 1)
                except KeyboardInterrupt:
                    stop.set()
                    for f in futures:
                        f.cancel()
                    raise
    except KeyboardInterrupt:
        report.interrupted = True
        report.seconds = time.perf_counter() - t0
        _atomic_write(out / REPORT_NAME, json.dumps(report.to_json(), indent=2) + "\n")
        raise
    order = {u: i for i, u in enumerate(urls)}
    report.failed.sort(key=lambda f: order.get(f["url"], -1))
    _write_csvs(sources, out, local, report)
    report.seconds = time.perf_counter() - t0
    _atomic_write(out / REPORT_NAME, json.dumps(report.to_json(), indent=2) + "\n")
    return report


__all__ = ["FetchOptions", "FetchReport", "fetch_dataset", "read_sources", "url_file_stem"]
