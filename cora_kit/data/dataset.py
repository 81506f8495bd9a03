"""torch Datasets over loaded samples: ERP decoding (PIL) and tiling run in DataLoader workers.

Items::

    CaptionDataset[i]  -> {"id": str, "image_path": str, "erp": FloatTensor [3,H,W] in [0,1],
                           "query": str, "answer": str, "references": list[str]}
    PanoramaDataset[i] -> {"id": str, "image_path": str, "erp": FloatTensor [3,H,W]}

With a ``tiler`` (``tiler(erp [1,3,H,W]) -> TiledViews``) each item also has
``"views"`` ``[V,3,s,s]``. ``collate`` stacks tensors and keeps strings as lists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from cora_kit.data.csv_loaders import ImageItem, LoadReport, Sample, load_images, load_split
from cora_kit.data.images import read_erp


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
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def make_loader(
    dataset: Dataset,
    batch_size: int = 8,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader with ``collate``; decoding/tiling happen in ``num_workers`` processes,
    and shuffling is seeded (same seed -> same order)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; got {num_workers}")
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        generator=gen,
        drop_last=drop_last,
        persistent_workers=False,
    )
