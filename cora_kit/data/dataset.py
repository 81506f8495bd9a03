"""torch Datasets over loaded samples: ERP decoding and tiling run in DataLoader workers.

Items::

    CaptionDataset[i]  -> {"id": str, "image_path": str, "erp": FloatTensor [3,H,W] in [0,1],
                           "query": str, "answer": str, "references": list[str]}
    PanoramaDataset[i] -> {"id": str, "image_path": str, "erp": FloatTensor [3,H,W]}
    TiledImages[i]     -> {"index": int, "views": FloatTensor [V,3,s,s]}

With a ``tiler`` (``tiler(erp [1,3,H,W]) -> TiledViews``) each Caption/Panorama item also
has ``"views"`` ``[V,3,s,s]``. ``TiledImages`` is the fast path that training, evaluation
and captioning use: the file is decoded to uint8 in the decoder's HWC layout and tiled
from that (the built-in tilers sample uint8 with OpenCV and convert only the views to
float); the full-size float ERP is never made. ``collate`` stacks tensors (into shared
memory inside a worker) and keeps strings as lists.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from cora_kit.data.csv_loaders import ImageItem, LoadReport, Sample, load_images, load_split
from cora_kit.data.images import read_erp
from cora_kit.errors import DataError


def decode_erp(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode an ERP file -> FloatTensor ``[3,H,W]`` in [0, 1]; ``size`` (H, W) resizes it
    (bilinear). ``cora_kit.data.images.read_erp``: bad files are DataErrors naming them."""
    return read_erp(path, size)


def _views(tiler: Callable[[torch.Tensor], Any] | None, erp: torch.Tensor) -> dict[str, torch.Tensor]:
    if tiler is None:
        return {}
    views = tiler(erp.unsqueeze(0)).views
    if views.dim() != 5 or views.shape[0] != 1:
        raise ValueError(f"tiler must return views [1,V,3,s,s] for one ERP; got {list(views.shape)}")
    return {"views": views[0]}


class _ErpDataset(Dataset):
    """Rows with an ``image_path`` -> dicts with the decoded ERP (and views when tiled)."""

    def __init__(
        self,
        rows: Sequence[Any] | LoadReport,
        erp_size: tuple[int, int] | None = None,
        tiler: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        self.items = list(rows.items if isinstance(rows, LoadReport) else rows)
        self.erp_size = erp_size
        self.tiler = tiler

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, row: Any) -> dict[str, Any]:
        erp = decode_erp(row.image_path, self.erp_size)
        return {"id": row.id, "image_path": row.image_path, "erp": erp, **_views(self.tiler, erp)}


class CaptionDataset(_ErpDataset):
    """(image, query) samples -> dicts with the decoded ERP, query, answer and references."""

    def __init__(
        self,
        samples: Sequence[Sample] | LoadReport,
        erp_size: tuple[int, int] | None = None,
        tiler: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        super().__init__(samples, erp_size, tiler)

    @property
    def samples(self) -> list[Sample]:
        return self.items

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.items[index]
        return {**self._image(s), "query": s.query, "answer": s.answer, "references": list(s.references)}


class PanoramaDataset(_ErpDataset):
    """Stage-1 panoramas (images only) -> ``{"id", "image_path", "erp"}``."""

    def __init__(
        self,
        items: Sequence[ImageItem] | LoadReport,
        erp_size: tuple[int, int] | None = None,
        tiler: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        super().__init__(items, erp_size, tiler)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._image(self.items[index])


def caption_dataset(
    path_or_dir: str | Path,
    split: str = "train",
    image_root: str | Path | None = None,
    on_bad_row: str = "error",
    erp_size: tuple[int, int] | None = None,
    tiler: Callable[[torch.Tensor], Any] | None = None,
) -> CaptionDataset:
    """``load_split`` + ``CaptionDataset`` in one call."""
    return CaptionDataset(load_split(path_or_dir, split, image_root, on_bad_row), erp_size, tiler)


def panorama_dataset(
    path_or_dir: str | Path,
    split: str = "train",
    image_root: str | Path | None = None,
    on_bad_row: str = "error",
    erp_size: tuple[int, int] | None = None,
    tiler: Callable[[torch.Tensor], Any] | None = None,
) -> PanoramaDataset:
    """``load_images`` + ``PanoramaDataset`` (a folder of panoramas works too)."""
    return PanoramaDataset(load_images(path_or_dir, split, image_root, on_bad_row), erp_size, tiler)


class TiledImages(Dataset):
    """Panoramas -> ``{"index": i, "views": FloatTensor [V,3,s,s]}``, decoded and tiled where
    the DataLoader runs it (its workers when ``num_workers > 0``).

    ``items``: dicts with an in-memory ``"erp"`` ``[3,H,W]`` (uint8 or float in [0,1]), or
    an ``"image_path"`` read as uint8 (``read_erp``) at the item's ``erp_size`` attribute
    if it has one, else ``erp_size``. ``tile``: ``erp [1,3,H,W] -> views [1,V,3,s,s]`` (a
    tiler's ``views``, or ``CoraModel.tile``). Bad files are DataErrors naming them.
    """

    def __init__(
        self, items: Sequence[Any], tile: Callable[[torch.Tensor], torch.Tensor],
        erp_size: tuple[int, int] | None = None,
    ) -> None:
        self.items = list(items)
        self.tile = tile
        self.erp_size = erp_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            if isinstance(item, dict) and "erp" in item:  # a Record decodes lazily: "in" is False
                erp = item["erp"]
            else:
                path = item["image_path"] if isinstance(item, dict) else item
                erp = read_erp(path, getattr(item, "erp_size", None) or self.erp_size, dtype=torch.uint8)
        except DataError as exc:  # raised again, as one line, by tiled_batches in the main process
            return {"index": index, "error": str(exc)}
        views = self.tile(erp.unsqueeze(0))
        if views.dim() != 5 or views.shape[0] != 1:
            raise ValueError(f"tile must return views [1,V,3,s,s] for one ERP; got {list(views.shape)}")
        return {"index": index, "views": views[0]}


def tiled_batches(
    data: TiledImages, batch_size: int, num_workers: int = 0
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(item indices, views ``[b,V,3,s,s]``) over ``data`` in order, ``batch_size`` at a time,
    decoded and tiled in ``num_workers`` DataLoader workers. A file that cannot be read is
    a ``DataError`` naming it (one line, not a worker traceback)."""
    loader = make_loader(data, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_tiled)
    for batch in loader:
        if "error" in batch:
            raise DataError(batch["error"])
        yield batch["index"], batch["views"]


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """Stack a batch: inside a DataLoader worker straight into shared memory
    (``default_collate``); in the main process with numpy (one memcpy per item into
    numpy-allocated memory, which gets huge pages). Measured on the 2-core machine under
    load, a batch of 8 x [9,3,256,256] views: numpy 13 ms, ``torch.stack`` 91-127 ms (its
    intra-op threads spin-wait when the cores are busy; its fresh allocation page-faults)."""
    first = values[0]
    if (get_worker_info() is not None or first.device.type != "cpu" or first.dtype not in _NUMPY_DTYPES
            or any(v.requires_grad for v in values)):
        return default_collate(values)
    return torch.from_numpy(np.stack([v.numpy() for v in values]))


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.uint8: np.uint8, torch.int64: np.int64}


def _collate_tiled(batch: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [b["error"] for b in batch if "error" in b]
    if errors:
        return {"error": errors[0]}
    return collate(batch)


def tile_function(source: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``erp [1,3,H,W] -> views`` from a tiler, or from a model: its ``tiler`` when it has
    one (light and picklable, for DataLoader workers started by spawn), else its ``tile``."""
    tiler = getattr(source, "tiler", None)
    if tiler is not None:
        return _TilerViews(tiler)
    tile = getattr(source, "tile", None)
    return tile if tile is not None else _TilerViews(source)


class _TilerViews:
    def __init__(self, tiler: Callable[[torch.Tensor], Any]) -> None:
        self.tiler = tiler

    def __call__(self, erp: torch.Tensor) -> torch.Tensor:
        return self.tiler(erp).views


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensor fields (``erp`` -> ``[B,3,H,W]``, ``views`` -> ``[B,V,3,s,s]``); other
    fields become lists. ERPs of different sizes are a ValueError (set ``erp_size``)."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"cannot batch '{key}' of different shapes {sorted(shapes)}; set erp_size")
            out[key] = _stack(values)
        else:
            out[key] = values
    return out


class _Loader(DataLoader):
    """A DataLoader whose forked workers run OpenCV on one thread.

    The tilers' OpenCV backend uses OpenCV's thread pool. A worker forked from a process
    whose pool has threads inherits the pool without its threads, and reconfiguring it in
    the worker (``cv2.setNumThreads``) blocks forever (measured: the first batch never
    came). So the parent sets one OpenCV thread while it forks the workers (they inherit
    that: one thread each, the workers being the parallelism) and restores its own after.
    """

    def __iter__(self) -> Any:
        cv2 = sys.modules.get("cv2")
        if self.num_workers == 0 or cv2 is None:
            return super().__iter__()
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return super().__iter__()  # starts (forks) the workers
        finally:
            cv2.setNumThreads(threads)


def make_loader(
    dataset: Dataset,
    batch_size: int = 8,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
) -> DataLoader:
    """A DataLoader with ``collate``; decoding/tiling happen in ``num_workers`` processes,
    and shuffling is seeded (same seed -> same order)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; got {num_workers}")
    gen = torch.Generator().manual_seed(seed)
    return _Loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate_fn or collate,
        generator=gen,
        drop_last=drop_last,
        persistent_workers=False,
    )
