"""The splits a run needs, as light records whose ERP is decoded only when used.

``Splits``: ``stage1_train`` / ``stage1_val`` (images only) and ``train`` / ``val`` /
``test`` (image, query, answer, references, kind), one record per (image, query) with all
its references (``answer`` is the first; ``kind`` is None when the data names none). A
record is a dict with ``id``, ``image_path`` (and the text fields); reading ``record["erp"]``
decodes the image (``[3,H,W]`` float in [0,1]) the first time it is needed, so
served-from-cache epochs never decode a PNG.

``training_items(records, targets)`` is what Stages 2-3 iterate over (``data.train_targets``):
``all`` one item per (image, query, annotation), as the seed trains on every CSV row; ``first``
one per (image, query) with its first annotation; ``sample`` one per (image, query) with an
annotation drawn per epoch (seeded). ``annotation_rows`` expands records the ``all`` way (the
validation loss is on every val row). ``data_report`` is the run's ``data-report.json``.
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
    #: the loaders' reports by split (train, val, test, stage1_train, stage1_val): what was
    #: read and every skipped row
    reports: dict[str, Any] = field(default_factory=dict)


def _captions(report: Any) -> list[dict[str, Any]]:
    return [
        Record(id=s.id, image_path=s.image_path, query=s.query, answer=s.answer, references=list(s.references),
               kind=s.kind)
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
        size=(s.height, s.width), seed=s.seed, queries_per_image=s.queries_per_image,
        workers=s.workers, version=s.version,
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
                      notes=[f"{root} is one CSV: used as the train split; no val/test split to evaluate on"],
                      reports={"train": train})
    train = load_split(root, "train", **kw)
    test = load_split(root, "test", **kw)
    val = load_split(root, "val", **kw)
    s1_train = load_images(root, "train", **kw)
    s1_val = load_images(root, "val", **kw)
    reports = {"train": train, "val": val, "test": test, "stage1_train": s1_train, "stage1_val": s1_val}
    return Splits(_images(s1_train), _images(s1_val), _captions(train), _captions(val), _captions(test), str(root),
                  reports=reports)


# --- what Stages 2-3 train on ------------------------------------------------------------

TRAIN_TARGETS = ("all", "first", "sample")


def _with_answer(record: dict[str, Any], key: str, answer: str) -> Record:
    out = Record(record, erp_size=getattr(record, "erp_size", None))
    out["id"], out["answer"] = key, answer
    return out


def annotation_rows(records: Sequence[dict[str, Any]]) -> list[Record]:
    """One record per (image, query, annotation): ``answer`` is that annotation, ``id`` is
    ``<id>/<k>``; ``references`` stays the whole group."""
    return [_with_answer(r, f"{r['id']}/{k}", ref) for r in records for k, ref in enumerate(r["references"])]


class SampledTargets(Sequence):
    """One item per (image, query); ``for_epoch(stage, epoch)`` draws one annotation of each
    as its answer, seeded by (seed, stage, epoch), so a resumed run draws the same ones.
    Indexing gives the records as loaded (answer: the first annotation)."""

    def __init__(self, records: Sequence[dict[str, Any]], seed: int) -> None:
        self.records, self.seed = list(records), seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):  # type: ignore[override]
        return self.records[index]

    def for_epoch(self, stage: int, epoch: int) -> list[Record]:
        g = torch.Generator().manual_seed(7_919 * self.seed + 104_729 * stage + epoch)
        picks = [int(torch.randint(len(r["references"]), (1,), generator=g)) for r in self.records]
        return [_with_answer(r, r["id"], r["references"][k]) for r, k in zip(self.records, picks, strict=True)]


def training_items(records: Sequence[dict[str, Any]], targets: str, seed: int = 0) -> Sequence[dict[str, Any]]:
    """What Stages 2-3 iterate over for ``data.train_targets`` (see the module docstring)."""
    if targets == "all":
        return annotation_rows(records)
    if targets == "first":
        return list(records)
    if targets == "sample":
        return SampledTargets(records, seed)
    raise DataError(f"data.train_targets must be one of {', '.join(TRAIN_TARGETS)}; got {targets!r}")


def epoch_items(items: Sequence[dict[str, Any]], stage: int, epoch: int) -> Sequence[dict[str, Any]]:
    """The items of one epoch: ``items`` itself, or this epoch's draw of a ``SampledTargets``."""
    return items.for_epoch(stage, epoch) if isinstance(items, SampledTargets) else items


# --- data-report.json ----------------------------------------------------------------------


def data_report(splits: Splits, config: CoraConfig, training: int | None = None) -> dict[str, Any]:
    """``data-report.json``: per split what was read and skipped, and every skipped row."""
    per_split: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for name, rep in splits.reports.items():
        per_split[name] = {
            "file": rep.source, "format": rep.format, "rows_read": rep.num_rows, "items": len(rep),
            "skipped": sum(rep.skipped.values()), "skipped_by_reason": dict(sorted(rep.skipped.items())),
        }
        rows += [{"split": name, **r} for r in getattr(rep, "skipped_rows", [])]
    return {
        "source": splits.source,
        "on_bad_row": config.data.on_bad_row,
        "train_targets": config.data.train_targets,
        "training_items_stage2_3": training,
        "splits": per_split,
        "skipped_total": len(rows),
        "skipped_rows": rows,
        "notes": list(splits.notes),
    }


def skipped_line(report: dict[str, Any]) -> str | None:
    """``"N rows skipped (train 3, test 1: missing image 4)"`` or None when none were."""
    if not report["skipped_total"]:
        return None
    per = ", ".join(f"{k} {v['skipped']}" for k, v in report["splits"].items() if v["skipped"])
    reasons: dict[str, int] = {}
    for v in report["splits"].values():
        for reason, n in v["skipped_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return f"{report['skipped_total']} rows skipped ({per}: {why})"


def _images_of(report: Any) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for s in report.items:
        seen.setdefault(s.image_path, Record(id=Path(s.image_path).stem, image_path=s.image_path))
    return list(seen.values())


__all__ = [
    "TRAIN_TARGETS", "Record", "SampledTargets", "Splits", "annotation_rows", "data_report", "data_root",
    "epoch_items", "load_splits", "skipped_line", "training_items",
]
