"""Loaders for the real formats: QuIC-360 CSV, the CORA paper's CSV, Stage-1 image lists.

| format  | columns                          | one row is                        |
|---------|----------------------------------|-----------------------------------|
| quic360 | ``url, query, annotation``       | one reference of (image, query)   |
| cora    | ``url, instruction, response``   | one reference of (image, query)   |
| stage1  | ``url``                          | one panorama (images only)        |

Captioning CSVs may carry an optional ``kind`` column: the query kind of the row's
(image, query) (the synthetic set names one for every query; QuIC-360 files have none and
load as before). Every row of one (image, query) must name the same kind; an empty value
means "no kind".

``url`` is an http(s) URL or a local path. URLs are never fetched: they map to
``image_root / <file name of the URL>``. A relative local path is resolved against
``image_root`` (then ``image_root / <file name>``) when given, else against the CSV's
folder, and must stay inside that folder: a row naming ``../../etc/passwd`` is a bad row
("path outside the dataset folder"). An absolute path is used as it is written. References are grouped per (image, query): every annotation of the same pair is
one reference set of one prediction.

Bad rows (empty query or answer, missing/unreadable image, image not 2:1, duplicate or
malformed row, bytes that are not UTF-8) raise ``DataError("<file>: row <n>: <reason>")`` with ``on_bad_row="error"``
(rows are numbered as lines of the file, the header is row 1); with ``"skip"`` they are
dropped and counted per reason in ``skipped``. A missing column is always an error.
Loading only reads files.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from cora_kit.data.images import ErpError, check_erp, confine
from cora_kit.errors import DataError

FORMATS: dict[str, tuple[str, str, str]] = {
    "quic360": ("url", "query", "annotation"),
    "cora": ("url", "instruction", "response"),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.csv",),
    "val": ("val.csv", "valid.csv", "validation.csv"),
    "test": ("test.csv",),
}
KIND_COLUMN = "kind"


@dataclass(frozen=True)
class Sample:
    """One (image, query) with all its references, in file order (``answer`` is the first)."""

    id: str
    image_path: str
    url: str
    query: str
    references: tuple[str, ...]
    rows: tuple[int, ...]
    #: the query kind when the file has a ``kind`` column (None otherwise)
    kind: str | None = None

    @property
    def answer(self) -> str:
        return self.references[0]


@dataclass(frozen=True)
class ImageItem:
    """One panorama for Stage 1."""

    id: str
    image_path: str


@dataclass
class LoadReport:
    """What a load produced: ``items`` (``Sample`` or ``ImageItem``), the number of good
    rows read, and what was skipped (reason -> count, the messages, and one record per
    skipped row: ``{"file", "row", "category", "reason"}``, ``row`` None for a folder's file)."""

    source: str
    format: str
    items: list = field(default_factory=list)
    num_rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    skipped_rows: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]

    def __iter__(self):
        return iter(self.items)

    def summary(self) -> str:
        """One line: counts, and what was skipped and why."""
        text = f"{self.source}: {len(self.items)} items from {self.num_rows} rows ({self.format})"
        if self.skipped:
            parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            text += f"; skipped {sum(self.skipped.values())} rows: {parts}"
        return text


class _BadRow(Exception):
    def __init__(self, category: str, reason: str) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason


class _Policy:
    """Applies ``on_bad_row`` and records skips in a report."""

    def __init__(self, on_bad_row: str, report: LoadReport) -> None:
        if on_bad_row not in ("error", "skip"):
            raise DataError(f"on_bad_row must be 'error' or 'skip'; got '{on_bad_row}'")
        self.mode, self.report = on_bad_row, report

    def bad(self, where: str, err: _BadRow, row: int | None = None, file: str | None = None) -> None:
        message = f"{where}: {err.reason}"
        if self.mode == "error":
            raise DataError(message)
        self.report.skipped[err.category] += 1
        self.report.problems.append(message)
        self.report.skipped_rows.append(
            {"file": file or self.report.source, "row": row, "category": err.category, "reason": err.reason}
        )


def is_url(text: str) -> bool:
    return urlparse(text).scheme in ("http", "https", "ftp", "s3", "gs")


def resolve_image(url: str, csv_dir: Path, image_root: Path | None) -> Path:
    """Local path of ``url`` (see the module docstring); raises ``_BadRow`` if missing or
    outside the dataset folder (``image_root``, else the CSV's folder: ``images.confine``)."""
    # absolute first: confine() joins a relative candidate to the root again
    csv_dir = Path(os.path.abspath(csv_dir))
    image_root = None if image_root is None else Path(os.path.abspath(image_root))
    if is_url(url):
        name = Path(unquote(urlparse(url).path)).name
        if image_root is None:
            raise _BadRow("missing image", f"image is a URL ({url}); URLs are not fetched: "
                          f"pass an image root holding a local copy named '{name}'")
        candidates = [image_root / name]
    else:
        p = Path(url).expanduser()
        if p.is_absolute():
            candidates = [p]
        elif image_root is not None:
            candidates = [image_root / p, image_root / p.name]
        else:
            candidates = [csv_dir / p]
    if not Path(url).expanduser().is_absolute() or is_url(url):  # a relative name stays in its folder
        root = image_root if image_root is not None else csv_dir
        try:
            candidates = [confine(c, root, url) for c in candidates]
        except ErpError as err:
            raise _BadRow(err.problem, str(err)) from None
    for c in candidates:
        if c.is_file():
            return c
    tried = " or ".join(str(c) for c in dict.fromkeys(candidates))
    raise _BadRow("missing image", f"image not found: {tried}")


def check_image(path: Path) -> None:
    """Reads the image header (``cora_kit.data.images.check_erp``): ``_BadRow`` if
    unreadable, of an unsupported colour mode or not 2:1 (equirectangular)."""
    try:
        check_erp(path)
    except ErpError as err:
        raise _BadRow(err.problem, str(err)) from None


class _ImageChecker:
    """Resolves and checks each distinct url once per load."""

    def __init__(self, csv_dir: Path, image_root: Path | None, check: bool) -> None:
        self.csv_dir, self.image_root, self.check = csv_dir, image_root, check
        self.cache: dict[str, Path | _BadRow] = {}

    def __call__(self, url: str) -> Path:
        if url not in self.cache:
            try:
                path = resolve_image(url, self.csv_dir, self.image_root)
                if self.check:
                    check_image(path)
                self.cache[url] = path
            except _BadRow as err:
                self.cache[url] = err
        got = self.cache[url]
        if isinstance(got, _BadRow):
            raise got
        return got


def _open_csv(path: Path):
    """The CSV opened for ``csv.reader`` (DataError naming the file if unreadable).

    Bytes that are not UTF-8 are kept as surrogate escapes, so one bad byte never costs
    the rest of a decoding block: ``_bad_bytes`` finds them in the record they belong to."""
    try:
        f = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return f


def _bad_bytes(fields: list[str]) -> str | None:
    """Where the first non-UTF-8 byte of a record is (``None`` if all decode)."""
    for k, text in enumerate(fields, start=1):
        for i, ch in enumerate(text):
            if "\udc80" <= ch <= "\udcff":
                return f"field {k} is not valid UTF-8 (byte 0x{ord(ch) - 0xDC00:02x} at character {i + 1})"
    return None


def _header(
    path: Path, reader, candidates: dict[str, tuple[str, ...]], optional: tuple[str, ...] = ()
) -> tuple[str, list[str], dict[str, int]]:
    """The format whose columns the header holds, its columns and their indices (plus the
    indices of the ``optional`` columns the header has)."""
    try:
        raw = next(reader)
    except StopIteration:
        raise DataError(f"{path}: row 1: empty file, expected a header") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: row 1: not a readable CSV ({exc})") from None
    bad = _bad_bytes(raw)
    if bad:
        raise DataError(f"{path}: row 1: header {bad}")
    header = [h.strip().lower() for h in raw]
    for fmt, cols in candidates.items():
        if all(c in header for c in cols):
            extra = {c: header.index(c) for c in optional if c in header}
            return fmt, list(cols), {**{c: header.index(c) for c in cols}, **extra}
    best = max(candidates.values(), key=lambda cols: sum(c in header for c in cols))
    missing = [c for c in best if c not in header]
    expected = " or ".join("(" + ", ".join(c) + ")" for c in candidates.values())
    raise DataError(
        f"{path}: row 1: missing column {', '.join(repr(m) for m in missing)}; "
        f"found columns ({', '.join(header)}), expected {expected}"
    )


def _rows(path: Path, reader, width: int):
    """``(row_number, fields)`` for every record; malformed rows yield a ``_BadRow``."""
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            yield reader.line_num, _BadRow("malformed row", f"not a valid CSV row ({exc})")
            continue
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        bad = _bad_bytes(fields)
        if bad:
            yield reader.line_num, _BadRow("not UTF-8", bad)
            continue
        if len(fields) < width:
            yield reader.line_num, _BadRow("malformed row", f"has {len(fields)} fields, header has {width}")
            continue
        yield reader.line_num, fields


def find_split_file(path_or_dir: str | Path, split: str, prefix: str = "") -> Path:
    """The CSV of ``split`` in a folder (``train.csv``, ``val.csv``/``valid.csv``, ...)."""
    p = Path(path_or_dir)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split '{split}'; splits: {', '.join(SPLIT_FILES)}")
    names = [prefix + n for n in SPLIT_FILES[split]]
    for name in names:
        if (p / name).is_file():
            return p / name
    raise DataError(f"{p}: no {' or '.join(names)} for split '{split}'")


def load_split(
    path_or_dir: str | Path,
    split: str = "train",
    image_root: str | Path | None = None,
    on_bad_row: str = "error",
    check_images: bool = True,
) -> LoadReport:
    """(image, query) samples of a QuIC-360 or CORA CSV, references grouped per pair.

    ``path_or_dir`` is the CSV, or a folder holding ``<split>.csv`` (e.g. a synthetic
    set). ``check_images`` reads each image's header (missing / unreadable / not 2:1).
    """
    path = find_split_file(path_or_dir, split)
    report = LoadReport(source=str(path), format="?")
    policy = _Policy(on_bad_row, report)
    images = _ImageChecker(path.parent, Path(image_root) if image_root else None, check_images)
    groups: dict[tuple[str, str], dict] = {}
    seen: dict[tuple[str, str, str], int] = {}
    with _open_csv(path) as f:
        reader = csv.reader(f)
        report.format, cols, index = _header(path, reader, FORMATS, optional=(KIND_COLUMN,))
        url_c, query_c, answer_c = cols
        kind_c = index.get(KIND_COLUMN)
        for row, fields in _rows(path, reader, max(index.values()) + 1):
            where = f"{path}: row {row}"
            try:
                if isinstance(fields, _BadRow):
                    raise fields
                url, query, answer = (fields[index[c]].strip() for c in cols)
                if not url:
                    raise _BadRow("empty url", f"empty '{url_c}'")
                if not query:
                    raise _BadRow(f"empty {query_c}", f"empty '{query_c}'")
                if not answer:
                    raise _BadRow(f"empty {answer_c}", f"empty '{answer_c}'")
                key = (url, query, answer)
                if key in seen:
                    raise _BadRow("duplicate row", f"duplicate of row {seen[key]}")
                kind = (fields[kind_c].strip() or None) if kind_c is not None else None
                image = images(url)
                g = groups.get((str(image), query))
                if g is not None and g["kind"] != kind:
                    raise _BadRow(
                        "conflicting kind",
                        f"kind {kind!r} differs from {g['kind']!r} of row {g['rows'][0]} (same image and query)",
                    )
            except _BadRow as err:
                policy.bad(where, err, row=row)
                continue
            seen[key] = row
            report.num_rows += 1
            g = groups.setdefault((str(image), query), {"url": url, "refs": [], "rows": [], "kind": kind})
            g["refs"].append(answer)
            g["rows"].append(row)
    per_image: Counter = Counter()
    for (image, query), g in groups.items():
        k = per_image[image]
        per_image[image] += 1
        report.items.append(
            Sample(
                id=f"{Path(image).stem}#{k}",
                image_path=image,
                url=g["url"],
                query=query,
                references=tuple(g["refs"]),
                rows=tuple(g["rows"]),
                kind=g["kind"],
            )
        )
    return report


def load_images(
    path_or_dir: str | Path,
    split: str = "train",
    image_root: str | Path | None = None,
    on_bad_row: str = "error",
) -> LoadReport:
    """Stage-1 panoramas (``ImageItem``) from a folder of images, a Stage-1 CSV (``url``),
    a captioning CSV (its distinct images), or a folder holding ``stage1_<split>.csv``."""
    p = Path(path_or_dir)
    if p.is_dir():
        names = [f"stage1_{n}" for n in SPLIT_FILES.get(split, ())] + list(SPLIT_FILES.get(split, ()))
        path = next((p / n for n in names if (p / n).is_file()), None)
        if path is None:
            return _load_image_folder(p, on_bad_row)
    elif p.is_file():
        path = p
    else:
        raise DataError(f"{p}: no such file or folder")
    report = LoadReport(source=str(path), format="?")
    policy = _Policy(on_bad_row, report)
    images = _ImageChecker(path.parent, Path(image_root) if image_root else None, True)
    seen: set[str] = set()
    with _open_csv(path) as f:
        reader = csv.reader(f)
        report.format, _cols, index = _header(path, reader, {"stage1": ("url",)})
        for row, fields in _rows(path, reader, index["url"] + 1):
            try:
                if isinstance(fields, _BadRow):
                    raise fields
                url = fields[index["url"]].strip()
                if not url:
                    raise _BadRow("empty url", "empty 'url'")
                image = str(images(url))
            except _BadRow as err:
                policy.bad(f"{path}: row {row}", err, row=row)
                continue
            report.num_rows += 1
            if image not in seen:  # captioning CSVs list an image once per reference
                seen.add(image)
                report.items.append(ImageItem(id=Path(image).stem, image_path=image))
    return report


def _load_image_folder(folder: Path, on_bad_row: str) -> LoadReport:
    report = LoadReport(source=str(folder), format="folder")
    policy = _Policy(on_bad_row, report)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) and no Stage-1 CSV")
    for f in files:
        try:
            check_image(f)
        except _BadRow as err:
            policy.bad(str(f), err, file=str(f))
            continue
        report.num_rows += 1
        report.items.append(ImageItem(id=f.stem, image_path=str(f)))
    return report
