"""The splits a run needs, as light records whose ERP is decoded only when used.

``Splits``: ``stage1_train`` / ``stage1_val`` (images only) and ``train`` / ``val`` /
``test`` (image, query, answer, references). A record is a dict with ``id``,
``image_path`` (and the text fields); reading ``record["erp"]`` decodes the image
(``[3,H,W]`` float in [0,1]) the first time it is needed, so served-from-cache epochs
never decode a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cora_kit.config import CoraConfig
from cora_kit.errors import DataError


class Record(dict):
    """A dict whose ``"erp"`` is decoded on first access (not kept afterwards); ``"erp" in
    record`` is False (the training path reads and tiles the file in DataLoader workers,
    ``cora_kit.data.TiledImages``). ``erp_size``: (H, W) to resize to, or None."""

    def __init__(self, *args: Any, erp_size: tuple[int, int] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.erp_size = erp_size

    def __missing__(self, key: str) -> torch.Tensor:
        if key != "erp":
            raise KeyError(key)
        from cora_kit.data.images import read_erp

        return read_erp(self["image_path"], self.erp_size)


@dataclass
class Splits:
    stage1_train: Sequence[dict[str, Any]]
    stage1_val: Sequence[dict[str, Any]]
    train: Sequence[dict[str, Any]]
    val: Sequence[dict[str, Any]] = field(default_factory=list)
    test: Sequence[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    notes: list[str] = field(default_factory=list)


def _captions(report: Any) -> list[dict[str, Any]]:
    return [
        Record(id=s.id, image_path=s.image_path, query=s.query, answer=s.answer, references=list(s.references))
        for s in report.items
    ]


def _images(report: Any) -> list[dict[str, Any]]:
    return [Record(id=i.id, image_path=i.image_path) for i in report.items]


def data_root(config: CoraConfig) -> Path:
    """The dataset folder/CSV of ``config``; without ``data.path``, the synthetic set
    (generated on first use, reused afterwards)."""
    if config.data.path:
        return Path(config.data.path)
    from cora_kit.data.synth import ensure_synthetic

    s = config.data.synth
    return ensure_synthetic(
        config.data.synth_dir, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test,
        size=(s.height, s.width), seed=s.seed,
    )


def load_splits(config: CoraConfig, root: Path | None = None) -> Splits:
    """Every split of the run's data. A single CSV is the train split (and, for Stage 1, its
    images); val/test then are empty and evaluation is reported as skipped."""
    from cora_kit.data.csv_loaders import load_images, load_split

    root = root or data_root(config)
    d = config.data
    kw = {"image_root": d.image_root, "on_bad_row": d.on_bad_row}
    if not root.exists():
        raise DataError(f"data path not found: {root}")
    if root.is_file():
        train = load_split(root, "train", **kw)
        images = _images_of(train)
        return Splits(images, [], _captions(train), [], [], str(root),
                      notes=[f"{root} is one CSV: used as the train split; no val/test split to evaluate on"])
    train = load_split(root, "train", **kw)
    test = load_split(root, "test", **kw)
    val = load_split(root, "val", **kw)
    s1_train = load_images(root, "train", **kw)
    s1_val = load_images(root, "val", **kw)
    return Splits(_images(s1_train), _images(s1_val), _captions(train), _captions(val), _captions(test), str(root))


def _images_of(report: Any) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for s in report.items:
        seen.setdefault(s.image_path, Record(id=Path(s.image_path).stem, image_path=s.image_path))
    return list(seen.values())


__all__ = ["Record", "Splits", "data_root", "load_splits"]
