"""Caption panoramas with a loaded model (``cora_kit.serving.loading.load_model``).

    rows = caption_files(model, panorama_files(["pano.jpg", "folder/"]), DEFAULT_QUERY)

The vision path is the one training used: ERP ``[B,3,H,W]`` in [0,1] -> tiler -> encoder
(all blocks) -> resampler -> projector -> fusion -> LLM ``generate``. Panorama files are
read by ``cora_kit.data.images`` (the one ERP reader: header check, colour mode, 2:1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from cora_kit.data.images import IMAGE_SUFFIXES, check_erp, read_erp
from cora_kit.errors import ConfigError, DataError
from cora_kit.serving.captioner import CaptionResult, Captioner
from cora_kit.train.protocol import CoraModelLike

#: the synthetic set's describe-style query (cora_kit/data/captions.py, kind "describe")
DEFAULT_QUERY = "describe the object above the horizon"


# --- panoramas ----------------------------------------------------------------------


def panorama_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their png/jpg/jpeg files (sorted by name).

    A missing path or a folder without panoramas is a ``DataError`` naming it."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: folder has no .png/.jpg/.jpeg panoramas")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError("no panoramas given")
    return out


def check_panorama(path: Path) -> None:
    """Header-only check (no decode): readable image, supported colour mode, 2:1 size;
    ``DataError`` naming the file (``cora_kit.data.images.check_erp``)."""
    check_erp(path)


def read_panorama(path: Path) -> torch.Tensor:
    """ERP file -> float ``[3,H,W]`` in [0,1], the same values training decodes
    (``cora_kit.data.images.read_erp``); bad files are ``DataError``s naming them."""
    return read_erp(path)


def read_queries_csv(path: str | Path) -> list[tuple[Path, str]]:
    """``(image, query)`` rows of a CSV with columns ``image`` and ``query`` (header first;
    an image may appear on several rows). Relative image paths resolve against the CSV's
    folder. Errors name the file and row (rows numbered as lines, the header is row 1)."""
    import csv

    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = {"image", "query"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{p}: missing column(s) {', '.join(sorted(missing))}; expected a header 'image,query'")
            rows: list[tuple[Path, str]] = []
            for n, row in enumerate(reader, start=2):
                image, query = (row.get("image") or "").strip(), (row.get("query") or "").strip()
                if not image:
                    raise DataError(f"{p}: row {n}: empty image")
                if not query:
                    raise DataError(f"{p}: row {n}: empty query")
                f = Path(image) if Path(image).is_absolute() else p.parent / image
                if not f.is_file():
                    raise DataError(f"{p}: row {n}: {f}: no such file")
                rows.append((f, query))
    except OSError as exc:
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{p}: not a UTF-8 CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{p}: no rows")
    return rows


# --- captioning ---------------------------------------------------------------------


def caption_erps(
    model: CoraModelLike, erps: Sequence[torch.Tensor], queries: Sequence[str], max_new_tokens: int = 32,
    num_beams: int = 1, precision: str | None = None,
) -> list[str]:
    """Captions for ERPs (each ``[3,H,W]`` in [0,1], any 2:1 size) and one query each, in
    one batch (``Captioner.caption_erps``: the encoder runs on every view at once);
    ``precision`` defaults to the model config's (``auto``: bf16 autocast on CUDA)."""
    return Captioner(model, max_new_tokens=max_new_tokens, num_beams=num_beams,
                     precision=precision or model.config.precision).caption_erps(erps, queries)


def caption_files(
    model: CoraModelLike,
    files: Sequence[Path],
    query: str = DEFAULT_QUERY,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[list[dict[str, str]]], None] | None = None,
    precision: str | None = None,
) -> list[dict[str, str]]:
    """Rows ``{"image", "query", "caption"}`` in file order (``Captioner.caption`` with one
    query); decoding options default to the model config's ``eval`` section, ``precision``
    to its ``precision``."""
    cap = Captioner(model, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size,
                    precision=precision or model.config.precision)
    if not query.strip():
        raise ConfigError("the query is empty")

    def rows(results: list[CaptionResult]) -> list[dict[str, str]]:
        return [{"image": r.image, "query": r.query, "caption": r.caption} for r in results]

    hook = None if on_batch is None else (lambda new: on_batch(rows(new)))
    return rows(cap.caption(list(files), query, on_batch=hook))


__all__ = [
    "DEFAULT_QUERY",
    "caption_erps",
    "caption_files",
    "check_panorama",
    "panorama_files",
    "read_panorama",
    "read_queries_csv",
]
