"""Datasets: the synthetic 360-degree captioning set, QuIC-360 / CORA CSV loaders.

Public API (imported lazily, so ``cora-kit data synth`` does not load torch)::

    ensure_synthetic(out_dir, n_train, n_val, n_test, size, seed)  generate-or-reuse
    load_split(path_or_dir, split, image_root=None, on_bad_row="error") -> LoadReport
    load_images(path_or_dir, split, image_root=None, on_bad_row="error") -> LoadReport
    CaptionDataset, PanoramaDataset, caption_dataset, panorama_dataset, make_loader, collate
    TiledImages(items, tile), tiled_batches(data, batch_size, num_workers)   decode + tile in workers
    check_erp(path), read_erp(path, size=None, dtype=torch.float32)   the one ERP file reader (images.py)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "SynthParams": "synth",
    "ensure_synthetic": "synth",
    "generate_synthetic": "synth",
    "load_scenes": "synth",
    "read_metadata": "synth",
    "ImageItem": "csv_loaders",
    "LoadReport": "csv_loaders",
    "Sample": "csv_loaders",
    "load_images": "csv_loaders",
    "load_split": "csv_loaders",
    "CaptionDataset": "dataset",
    "PanoramaDataset": "dataset",
    "TiledImages": "dataset",
    "tiled_batches": "dataset",
    "caption_dataset": "dataset",
    "collate": "dataset",
    "decode_erp": "dataset",
    "make_loader": "dataset",
    "panorama_dataset": "dataset",
    "ErpError": "images",
    "check_erp": "images",
    "read_erp": "images",
    "Scene": "scene",
    "SceneObject": "scene",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cora_kit.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"cora_kit.data.{_EXPORTS[name]}"), name)
