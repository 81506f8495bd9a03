"""Caption panoramas with a trained run folder or an exported model folder.

    model, info = load_model(run="runs/NAME")          # config.yaml + stage weights
    model, info = load_model(model_dir="exported/")    # cora-kit export output
    rows = caption_files(model, panorama_files(["pano.jpg", "folder/"]), DEFAULT_QUERY)

A run folder holds the trainable weights only; the frozen ones are rebuilt from
``config.yaml``: the tiny preset's are a seeded random init (``CoraModel.from_config``
seeds each component with ``config.seed``), the paper preset's come from the pretrained
files. The vision path is the one training used: ERP ``[B,3,H,W]`` in [0,1] -> tiler ->
encoder (all blocks) -> resampler -> projector -> fusion -> LLM ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from cora_kit.config import CoraConfig
from cora_kit.errors import CheckpointError, ConfigError, DataError

#: the synthetic set's describe-style query (cora_kit/data/captions.py, kind "describe")
DEFAULT_QUERY = "describe the object above the horizon"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STAGES = (1, 2, 3)


@dataclass
class LoadInfo:
    """Where the weights of a loaded model came from (printed by the CLI)."""

    source: str
    kind: str  # "run" or "export"
    stages: dict[int, str] = field(default_factory=dict)  # stage -> weights file
    notes: list[str] = field(default_factory=list)


# --- config -------------------------------------------------------------------------


def read_config(path: Path) -> CoraConfig:
    """A resolved ``config.yaml`` (as written by ``cora-kit run`` / ``export``)."""
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (a run or export folder has config.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    try:
        return CoraConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: invalid config at '{loc}': {err['msg']}") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


# --- loading ------------------------------------------------------------------------


def _stage_weights(root: Path, k: int) -> tuple[Path, str] | None:
    """(weights file, note) of stage ``k`` in ``root``: final weights, else the last
    checkpoint of an unfinished stage; None when the stage never ran there."""
    from cora_kit.train import checkpoint as ckpt

    d = root / f"stage{k}"
    if ckpt.is_done(d):
        return d / ckpt.WEIGHTS_FINAL, ""
    if (d / ckpt.WEIGHTS_LAST).is_file():
        step = ckpt.weights_metadata(d / ckpt.WEIGHTS_LAST).get("step", "?")
        return d / ckpt.WEIGHTS_LAST, f"stage {k} is unfinished: using its checkpoint at step {step}"
    return None


def run_stage_files(run_dir: Path, sources: Sequence[Path] = ()) -> tuple[dict[int, Path], list[str]]:
    """Weights file of every stage up to the latest one found in ``run_dir``.

    Each stage's checkpoint holds only what trained in it, so the model is stage 1, then
    2, then 3 applied in order. A stage before the latest one is looked up in ``run_dir``
    then in ``sources`` (runs trained with ``--from``); missing -> ``CheckpointError``.
    """
    run_dir = Path(run_dir)
    found = {k: _stage_weights(run_dir, k) for k in STAGES}
    latest = max((k for k, v in found.items() if v is not None), default=None)
    if latest is None:
        raise CheckpointError(f"{run_dir}: no stage1/, stage2/ or stage3/ weights; is it a run folder?")
    if latest < 2:
        raise CheckpointError(
            f"{run_dir}: only stage 1 has weights; captioning needs the projector and LLM of stage 2 or 3"
        )
    files: dict[int, Path] = {}
    notes: list[str] = []
    for k in range(1, latest + 1):
        hit = found[k]
        if hit is not None and hit[1] and k < latest:
            raise CheckpointError(f"{run_dir}: stage {k} is unfinished but stage {latest} has weights")
        for src in sources:
            if hit is not None:
                break
            got = _stage_weights(Path(src), k)
            hit = got if got is not None and not got[1] else None
        if hit is None:
            where = " or ".join(str(p) for p in [run_dir, *sources])
            raise CheckpointError(
                f"stage {k}'s weights are in neither {where} (the run started from another run?"
                " pass that run folder with --from)"
            )
        files[k] = hit[0]
        if hit[1]:
            notes.append(hit[1])
    return files, notes


def load_run(run_dir: str | Path, device: str = "auto", sources: Sequence[str | Path] = ()) -> tuple[Any, LoadInfo]:
    """``CoraModel`` of a run folder: rebuilt from ``config.yaml`` (seeded), then every
    stage's trainable weights loaded in order (strict: names and shapes must match)."""
    from cora_kit.pipeline import CoraModel
    from cora_kit.train import checkpoint as ckpt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such run folder")
    config = read_config(run_dir / "config.yaml")
    files, notes = run_stage_files(run_dir, [Path(s) for s in sources])
    model = CoraModel.from_config(config, device=resolve_device(device))
    from cora_kit.train.engine import WEIGHTS_FINGERPRINT, check_or_write_fingerprint

    check_or_write_fingerprint(run_dir / WEIGHTS_FINGERPRINT, model, writer=False)
    for k, path in files.items():
        model.load_trainable_state_dict(ckpt.load_weights(path), strict=True)
    model.eval()
    return model, LoadInfo(str(run_dir), "run", {k: str(p) for k, p in files.items()}, notes)


def load_model(
    run: str | Path | None = None, model_dir: str | Path | None = None, device: str = "auto",
    sources: Sequence[str | Path] = (),
) -> tuple[Any, LoadInfo]:
    """Exactly one of ``run`` (a run folder) or ``model_dir`` (an exported folder)."""
    if (run is None) == (model_dir is None):
        raise ConfigError("give exactly one of --run RUN_DIR or --model EXPORTED_DIR")
    if run is not None:
        return load_run(run, device, sources)
    from cora_kit.models.export import load_export

    return load_export(Path(model_dir), device)  # type: ignore[arg-type]


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
    """Header-only check (no decode): readable image, 2:1 size. ``DataError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if w != 2 * h:
        raise DataError(f"{path}: {w}x{h} is not an equirectangular panorama (width must be 2 x height)")


def read_panorama(path: Path) -> torch.Tensor:
    """ERP file -> float ``[3,H,W]`` in [0,1], the same values training decodes
    (``cora_kit.data.images.read_erp``); bad files are ``DataError``s naming them."""
    from cora_kit.data.images import read_erp

    return read_erp(path)


# --- captioning ---------------------------------------------------------------------


@torch.no_grad()
def caption_erps(
    model: Any, erps: Sequence[torch.Tensor], queries: Sequence[str], max_new_tokens: int = 32, num_beams: int = 1
) -> list[str]:
    """Captions for ERPs (each ``[3,H,W]``, uint8 or float in [0,1], any 2:1 size) and one
    query each. uint8 ERPs (``read_erp(path, dtype=torch.uint8)``) take the tiling path
    training and ``caption_files`` take (the tiler's CPU fast path); float ERPs take the
    exact float path, whose views differ by the uint8 rounding (<= 0.5/255)."""
    if len(erps) != len(queries):
        raise ValueError(f"{len(erps)} panoramas but {len(queries)} queries")
    if not erps:
        return []
    for erp in erps:
        if erp.dim() != 3 or erp.shape[0] != 3:
            raise ValueError(f"caption_erps expects ERP [3,H,W]; got {list(erp.shape)}")
    device = _device(model)
    views = []
    for erp in erps:  # sizes may differ between files: tile one at a time, batch the rest
        x = erp.unsqueeze(0) if erp.dtype == torch.uint8 else erp.unsqueeze(0).to(device)  # uint8: CPU
        views.append(model.tile(x).to(device))
    return caption_views(model, torch.cat(views), queries, max_new_tokens, num_beams)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def caption_views(
    model: Any, views: torch.Tensor, queries: Sequence[str], max_new_tokens: int = 32, num_beams: int = 1
) -> list[str]:
    """Captions for tiled panoramas ``views`` ``[B,V,3,s,s]`` and one query each."""
    hidden = model.encode_frozen(views.to(_device(model)), 3)
    latent = model.resample(model.encode_trainable(hidden, 3))
    return model.generate(latent, list(queries), max_new_tokens=max_new_tokens, num_beams=num_beams)


def caption_files(
    model: Any,
    files: Sequence[Path],
    query: str = DEFAULT_QUERY,
    max_new_tokens: int | None = None,
    num_beams: int | None = None,
    batch_size: int | None = None,
    on_batch: Callable[[list[dict[str, str]]], None] | None = None,
) -> list[dict[str, str]]:
    """Rows ``{"image", "query", "caption"}`` in file order; decoding options default to
    the model config's ``eval`` section. Every file is header-checked before any work;
    files are decoded (uint8) and tiled in ``config.data.num_workers`` DataLoader workers
    (``cora_kit.data.TiledImages``), as in training."""
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
    from cora_kit.data.dataset import TiledImages, tile_function, tiled_batches

    rows: list[dict[str, str]] = []
    data = TiledImages([{"image_path": str(f)} for f in files], tile_function(model))
    workers = model.config.data.num_workers if len(files) > batch_size else 0
    for index, views in tiled_batches(data, batch_size, workers):
        chunk = [files[i] for i in index]
        texts = caption_views(model, views, [query] * len(chunk), max_new_tokens, num_beams)
        new = [{"image": str(f), "query": query, "caption": t} for f, t in zip(chunk, texts, strict=True)]
        rows.extend(new)
        if on_batch is not None:
            on_batch(new)
    return rows


__all__ = [
    "DEFAULT_QUERY",
    "LoadInfo",
    "caption_erps",
    "caption_files",
    "caption_views",
    "check_panorama",
    "load_model",
    "load_run",
    "panorama_files",
    "read_config",
    "read_panorama",
    "run_stage_files",
]
