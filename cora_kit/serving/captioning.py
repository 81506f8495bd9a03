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


# --- captioning ---------------------------------------------------------------------


@torch.no_grad()
def caption_erps(
    model: CoraModelLike, erps: Sequence[torch.Tensor], queries: Sequence[str], max_new_tokens: int = 32, num_beams: int = 1
) -> list[str]:
    """Captions for ERPs (each ``[3,H,W]`` in [0,1], any 2:1 size) and one query each."""
    if len(erps) != len(queries):
        raise ValueError(f"{len(erps)} panoramas but {len(queries)} queries")
    if not erps:
        return []
    device = next(model.parameters()).device
    latents = []
    for erp in erps:  # sizes may differ between files: tile one at a time, batch the rest
        if erp.dim() != 3 or erp.shape[0] != 3:
            raise ValueError(f"caption_erps expects ERP [3,H,W]; got {list(erp.shape)}")
        views = model.tile(erp.unsqueeze(0).to(device))
        latents.append(model.encode_frozen(views, 3))
    hidden = torch.cat(latents)
    latent = model.resample(model.encode_trainable(hidden, 3))
    return model.generate(latent, list(queries), max_new_tokens=max_new_tokens, num_beams=num_beams)


def caption_files(
    model: CoraModelLike,
    files: Sequence[Path],
    query: str = DEFAULT_QUERY,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[list[dict[str, str]]], None] | None = None,
) -> list[dict[str, str]]:
    """Rows ``{"image", "query", "caption"}`` in file order; decoding options default to
    the model config's ``eval`` section. Every file is header-checked before any work."""
    ev = model.config.eval
    max_new_tokens = ev.max_new_tokens if max_new_tokens is None else max_new_tokens
    num_beams = ev.num_beams if num_beams is None else num_beams
    batch_size = ev.batch_size if batch_size is None else batch_size
    if max_new_tokens < 1 or num_beams < 1 or batch_size < 1:
        raise ConfigError(
            f"max_new_tokens, beams and batch size must be >= 1; got {max_new_tokens}, {num_beams}, {batch_size}"
        )
    if not query.strip():
        raise ConfigError("the query is empty")
    for f in files:
        check_panorama(f)
    rows: list[dict[str, str]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        erps = [read_panorama(f) for f in chunk]
        texts = caption_erps(model, erps, [query] * len(chunk), max_new_tokens, num_beams)
        new = [{"image": str(f), "query": query, "caption": t} for f, t in zip(chunk, texts, strict=True)]
        rows.extend(new)
        if on_batch is not None:
            on_batch(new)
    return rows


__all__ = [
    "DEFAULT_QUERY",
    "caption_erps",
    "caption_files",
    "check_panorama",
    "panorama_files",
    "read_panorama",
]
