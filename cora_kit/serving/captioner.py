"""``Captioner``: load a trained model once, caption panoramas in batches.

    from cora_kit import Captioner
    cap = Captioner.from_run("runs/bimamba-densecl-s0")      # or Captioner.from_export("exported/")
    results = cap.caption(["a.png", "b.png"], "what is left of the red cube?")
    results[0].caption, results[0].query, results[0].seconds

``caption(images, queries)`` takes panorama files (2:1 ERP) or ERP tensors ``[3,H,W]``
(float in [0,1], or uint8 0-255) and one query for all of them or one per image. Files and
uint8 tensors take the path training takes: decoded as uint8 and tiled by the tiler's CPU
fast path (OpenCV for the built-ins) in ``config.data.num_workers`` DataLoader workers
(``cora_kit.data.TiledImages``); float tensors are tiled on the model's device (the tiler's
exact float path). Images are processed ``batch_size`` at a time, and within a batch the
encoder runs on all ``B x V`` views at once, then the resampler, projector and the LLM's
``generate``. On CUDA the model runs under bf16 autocast
(``precision="auto"``); ``"fp32"`` turns that off, ``"bf16"`` forces it (also on CPU).

Every file is header-checked before any model work; bad files are ``DataError``s naming
them. Decoding options default to the model config's ``eval`` section.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cora_kit.data.images import check_erp, read_erp
from cora_kit.device import PRECISIONS, autocast
from cora_kit.errors import ConfigError, DataError
from cora_kit.serving.loading import LoadInfo, load_export, load_run

ImageInput = str | Path | torch.Tensor


@dataclass(frozen=True)
class CaptionResult:
    """One caption. ``seconds``: wall time of the batch that produced it divided by the
    batch's size (so the sum over results is the captioning time; decoding files and
    the model work included); ``image``: the file, or None for a tensor input."""

    caption: str
    query: str
    seconds: float
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_erp(image: torch.Tensor) -> torch.Tensor:
    """ERP tensor -> ``[3,H,W]``: uint8 as it is (the tiler's fast path takes it), other
    floats as float32 in [0,1]; ``ValueError`` on bad shapes and dtypes."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"an ERP tensor must be [3,H,W]; got {list(image.shape)}")
    h, w = image.shape[-2:]
    if w != 2 * h:
        raise ValueError(f"an ERP tensor must be 2:1 (W = 2H); got H={h}, W={w}")
    if image.dtype == torch.uint8:
        return image
    if not image.dtype.is_floating_point:
        raise ValueError(f"an ERP tensor must be float in [0,1] or uint8; got {image.dtype}")
    return image.float()


@torch.no_grad()
def tile_erps(model: Any, erps: Sequence[torch.Tensor]) -> torch.Tensor:
    """ERPs (each ``[3,H,W]``, uint8 or float in [0,1], sizes may differ) -> views
    ``[B,V,3,s,s]`` on the model's device. uint8 ERPs are tiled on the CPU (the tiler's
    fast path), float ones on the device; ERPs of one size and dtype as one batch."""
    device = next(model.parameters()).device
    groups: dict[tuple[int, int, torch.dtype], list[int]] = {}
    for i, erp in enumerate(erps):
        groups.setdefault((*erp.shape[-2:], erp.dtype), []).append(i)
    views: list[torch.Tensor | None] = [None] * len(erps)
    for (_, _, dtype), idx in groups.items():
        batch = torch.stack([erps[i] for i in idx])
        for i, v in zip(idx, model.tile(batch if dtype == torch.uint8 else batch.to(device)).to(device), strict=True):
            views[i] = v
    return torch.stack(views)  # type: ignore[arg-type]


@torch.no_grad()
def encode_views(model: Any, views: torch.Tensor) -> torch.Tensor:
    """Views ``[B,V,3,s,s]`` -> latent ``[B,V,P',D]``: the encoder once on all ``B*V``
    views, the resampler once on the batch."""
    hidden = model.encode_frozen(views.to(next(model.parameters()).device), 3)
    return model.resample(model.encode_trainable(hidden, 3))


@torch.no_grad()
def encode_erps(model: Any, erps: Sequence[torch.Tensor]) -> torch.Tensor:
    """ERPs (each ``[3,H,W]``, uint8 or float in [0,1], sizes may differ) -> latent
    ``[B,V,P',D]`` (``tile_erps`` then ``encode_views``)."""
    return encode_views(model, tile_erps(model, erps))


class Captioner:
    """A loaded model and its decoding settings; ``caption`` is safe to call repeatedly
    (not from several threads at once: the server runs it on one worker thread)."""

    def __init__(
        self,
        model: Any,
        info: LoadInfo | None = None,
        *,
        precision: str = "auto",
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        ev = model.config.eval
        self.model = model.eval()
        self.info = info or LoadInfo(source="(in memory)", kind="model")
        self.max_new_tokens = ev.max_new_tokens if max_new_tokens is None else max_new_tokens
        self.num_beams = ev.num_beams if num_beams is None else num_beams
        self.batch_size = ev.batch_size if batch_size is None else batch_size
        if min(self.max_new_tokens, self.num_beams, self.batch_size) < 1:
            raise ConfigError(
                "max_new_tokens, beams and batch size must be >= 1; got"
                f" {self.max_new_tokens}, {self.num_beams}, {self.batch_size}"
            )
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        self.device: torch.device = next(model.parameters()).device
        self.precision = precision
        self.autocast_dtype: torch.dtype | None = (
            torch.bfloat16 if precision == "bf16" or (precision == "auto" and self.device.type == "cuda") else None
        )

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_run(cls, path: str | Path, device: str = "auto", sources: Sequence[str | Path] = (),
                 trust_remote_code: bool = False, **options: Any) -> Captioner:
        """A run folder (``cora-kit run``): config.yaml + every stage's weights (sha256
        checked), loaded once. ``sources``: run folders holding earlier stages (runs trained
        with ``--from``). ``trust_remote_code`` comes from the caller only, never the folder."""
        model, info = load_run(path, device=device, sources=sources, trust_remote_code=trust_remote_code)
        return cls(model, info, **options)

    @classmethod
    def from_export(cls, path: str | Path, device: str = "auto", trust_remote_code: bool = False,
                    **options: Any) -> Captioner:
        """A folder written by ``cora-kit export`` (every file's sha256 checked, safetensors
        only, paths confined to it; ``trust_remote_code`` from the caller only)."""
        model, info = load_export(path, device=device, trust_remote_code=trust_remote_code)
        return cls(model, info, **options)

    # -- describing -----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What is loaded: source, kind, plugins, preset, device, precision, decoding."""
        m = self.model.config.model
        return {
            "source": self.info.source, "kind": self.info.kind, "name": Path(self.info.source).name,
            "resampler": m.resampler.name, "loss": m.loss.name, "tiler": m.tiler.name,
            "preset": self.model.config.preset, "device": str(self.device),
            "precision": "bf16" if self.autocast_dtype is not None else "fp32",
            "max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
        }

    # -- captioning -----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.precision)  # the one precision rule (training, evaluation)

    @torch.no_grad()
    def caption_erps(self, erps: Sequence[torch.Tensor], queries: Sequence[str]) -> list[str]:
        """Captions of one batch: ERPs ``[3,H,W]`` (uint8, or float in [0,1]) and one query
        each. uint8 ERPs (``read_erp(path, dtype=torch.uint8)``) are tiled as training tiles
        them; float ERPs by the tiler's exact float path (views differ by <= 0.5/255)."""
        if len(erps) != len(queries):
            raise ValueError(f"{len(erps)} panoramas but {len(queries)} queries")
        if not erps:
            return []
        return self.caption_views(tile_erps(self.model, [_as_erp(e) for e in erps]), queries)

    @torch.no_grad()
    def caption_views(self, views: torch.Tensor, queries: Sequence[str]) -> list[str]:
        """Captions of one batch of tiled panoramas ``[B,V,3,s,s]`` and one query each."""
        with self._autocast():
            latent = encode_views(self.model, views)
            return self.model.generate(latent, list(queries), max_new_tokens=self.max_new_tokens,
                                       num_beams=self.num_beams)

    def _batches(self, items: list[ImageInput], size: int) -> Any:
        """(item indices, views) ``size`` items at a time, in order: files and uint8 tensors
        decoded and tiled by ``TiledImages`` (``config.data.num_workers`` workers), float
        tensors tiled on the model's device."""
        from cora_kit.data.dataset import TiledImages, tile_function, tiled_batches

        if any(isinstance(x, torch.Tensor) and x.dtype != torch.uint8 for x in items):
            for start in range(0, len(items), size):
                idx = list(range(start, min(start + size, len(items))))
                erps = [_as_erp(items[i]) if isinstance(items[i], torch.Tensor) else read_erp(items[i], dtype=torch.uint8)
                        for i in idx]
                yield idx, tile_erps(self.model, erps)
            return
        rows = [{"erp": x} if isinstance(x, torch.Tensor) else {"image_path": str(x)} for x in items]
        workers = self.model.config.data.num_workers if len(items) > size else 0
        yield from tiled_batches(TiledImages(rows, tile_function(self.model)), size, workers)

    def caption(
        self,
        images: ImageInput | Sequence[ImageInput],
        queries: str | Sequence[str],
        batch_size: int | None = None,
        on_batch: Callable[[list[CaptionResult]], None] | None = None,
    ) -> list[CaptionResult]:
        """Caption ``images`` (files or ERP tensors) with ``queries`` (one for all, or one each).

        Returns one ``CaptionResult`` per image, in order. Empty queries, a count mismatch
        and bad files are errors raised before any model work."""
        items = [images] if isinstance(images, (str, Path, torch.Tensor)) else list(images)
        qs = [queries] * len(items) if isinstance(queries, str) else list(queries)
        if len(qs) != len(items):
            raise ConfigError(f"{len(items)} panoramas but {len(qs)} queries")
        for i, q in enumerate(qs):
            if not isinstance(q, str) or not q.strip():
                raise ConfigError(f"query {i + 1} is empty")
        for item in items:
            if isinstance(item, torch.Tensor):
                _as_erp(item)  # shape check only
            elif isinstance(item, (str, Path)):
                check_erp(item)
            else:
                raise DataError(f"{type(item).__name__}: not a panorama file or an ERP tensor")
        size = self.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ConfigError(f"batch size must be >= 1; got {size}")
        out: list[CaptionResult] = []
        t0 = time.perf_counter()
        for idx, views in self._batches([_as_erp(x) if isinstance(x, torch.Tensor) else x for x in items], size):
            chunk, chunk_q = [items[i] for i in idx], [qs[i] for i in idx]
            texts = self.caption_views(views, chunk_q)
            share = (time.perf_counter() - t0) / len(chunk)  # decoding (the loader) included
            new = [
                CaptionResult(t, q, share, None if isinstance(x, torch.Tensor) else str(x))
                for x, q, t in zip(chunk, chunk_q, texts, strict=True)
            ]
            out.extend(new)
            if on_batch is not None:
                on_batch(new)
            t0 = time.perf_counter()
        return out


__all__ = ["PRECISIONS", "CaptionResult", "Captioner", "encode_erps", "encode_views", "tile_erps"]

