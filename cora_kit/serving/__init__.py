"""Using a trained model: load a run folder or an exported folder, caption panoramas, export.

    from cora_kit.serving import load_model, caption_files, panorama_files
    model, info = load_model(run="runs/NAME")          # or model_dir="exported/"
    rows = caption_files(model, panorama_files(["pano.jpg", "folder/"]))

Modules (each imports only the ones above it in this list, and the layers below serving):

* ``export_format``: the exported folder's format (files, hashes, pickle refusal);
* ``loading``: ``load_run`` / ``load_export`` / ``load_model`` -> ``(CoraModel, LoadInfo)``;
* ``captioning``: panorama files -> captions with a loaded model;
* ``export``: a run -> a self-contained exported folder (``cora-kit export``).

``cora_kit.inference`` (before 0.2) was an internal module; its functions live here now.
"""

from __future__ import annotations

from cora_kit.serving.captioning import (
    DEFAULT_QUERY,
    caption_erps,
    caption_files,
    check_panorama,
    panorama_files,
    read_panorama,
)
from cora_kit.serving.export import export_model, export_run
from cora_kit.serving.loading import LoadInfo, load_export, load_model, load_run, run_stage_files

__all__ = [
    "DEFAULT_QUERY",
    "LoadInfo",
    "caption_erps",
    "caption_files",
    "check_panorama",
    "export_model",
    "export_run",
    "load_export",
    "load_model",
    "load_run",
    "panorama_files",
    "read_panorama",
    "run_stage_files",
]
