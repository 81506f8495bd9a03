"""Using a trained model: load a run folder or an exported folder, caption panoramas, export.

    from cora_kit.serving import Captioner                # also cora_kit.Captioner
    cap = Captioner.from_run("runs/NAME")                  # or Captioner.from_export("exported/")
    results = cap.caption(["pano.jpg", "b.png"], "what is above the horizon?")

Modules (each imports only the ones above it in this list, and the layers below serving):

* ``export_format``: the exported folder's format (files, hashes, pickle refusal);
* ``loading``: ``load_run`` / ``load_export`` / ``load_model`` -> ``(CoraModel, LoadInfo)``;
* ``captioner``: ``Captioner`` (load once, caption batches: the public API);
* ``captioning``: panorama files -> caption rows with a loaded model (the CLI's helpers);
* ``export``: a run -> a self-contained exported folder (``cora-kit export``).

``cora_kit.inference`` (before 0.2) was an internal module; its functions live here now.
"""

from __future__ import annotations

from cora_kit.serving.captioner import CaptionResult, Captioner
from cora_kit.serving.captioning import (
    DEFAULT_QUERY,
    caption_erps,
    caption_files,
    check_panorama,
    panorama_files,
    read_panorama,
    read_queries_csv,
)
from cora_kit.serving.export import export_model, export_run
from cora_kit.serving.loading import LoadInfo, load_export, load_model, load_run, run_stage_files

__all__ = [
    "DEFAULT_QUERY",
    "CaptionResult",
    "Captioner",
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
    "read_queries_csv",
    "run_stage_files",
]
