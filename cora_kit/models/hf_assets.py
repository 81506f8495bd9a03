"""Where Hugging Face assets come from: local paths, the hub cache, packaged files.

cora-kit never downloads. A model id resolves to a local directory (a path given by the
user, or a snapshot already in the Hugging Face cache); otherwise ``MissingWeightsError``
says where it looked and how to get the files. The packaged files are the config.json of
the paper models (``cora_kit/configs/models/<org>--<name>/config.json``, for random-init
builds on the meta device) and the tiny tokenizer (``cora_kit/assets/tiny_tokenizer``, built by
``cora_kit.data.tiny_tokenizer``).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from cora_kit.data.tiny_tokenizer import tiny_tokenizer_dir  # noqa: F401  (plugins find the tiny tokenizer here)
from cora_kit.errors import MissingWeightsError

#: value of ``model.llm.tokenizer`` that selects the packaged tiny tokenizer
TINY_TOKENIZER = "cora-kit-tiny"


def shipped_config_dir(model_id: str) -> Path | None:
    """Packaged config directory for a hub id such as ``Qwen/Qwen3-0.6B``, or None."""
    folder = resources.files("cora_kit.configs") / "models" / model_id.replace("/", "--")
    path = Path(str(folder))
    return path if (path / "config.json").is_file() else None


def shipped_config(model_id: str) -> dict[str, Any] | None:
    """The packaged config.json of ``model_id`` as a dict, or None when none is shipped."""
    folder = shipped_config_dir(model_id)
    if folder is None:
        return None
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or "\\" in text or text.count("/") > 1


def find_local(model_id_or_path: str) -> Path | None:
    """A local directory holding ``model_id_or_path``: the path itself, or a hub-cache snapshot."""
    path = Path(model_id_or_path).expanduser()
    if path.is_dir():
        return path
    if _looks_like_path(model_id_or_path):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id_or_path, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def missing_message(model_id_or_path: str, what: str, section: str) -> str:
    """The text of ``MissingWeightsError``: where cora-kit looked and how to get the files.

    ``section`` is the config section of the component (``"model.encoder"``)."""
    from huggingface_hub import constants

    path = Path(model_id_or_path).expanduser()
    looked = [f"local path {path.resolve()} (no such directory)"]
    if not _looks_like_path(model_id_or_path):
        looked.append(f"Hugging Face cache {constants.HF_HUB_CACHE} (no snapshot of '{model_id_or_path}')")
    return (
        f"{what} weights '{model_id_or_path}' are not on disk; looked at "
        + " and ".join(looked)
        + ". cora-kit never downloads: on a machine with internet run "
        f"`hf download {model_id_or_path}` (then copy the cache, or set HF_HUB_CACHE), or save the "
        f"model with save_pretrained and pass --set {section}.pretrained=/path/to/it. "
        f"For a random-init build of the same architecture set {section}.options.random_init=true "
        f"(shapes, parameter counts and memory only; never for results)."
    )


def resolve_pretrained(model_id_or_path: str, what: str, section: str) -> Path:
    """Local directory for ``model_id_or_path`` or ``MissingWeightsError``.

    ``what`` names the component in the message (``"vision encoder"``), ``section`` its
    config section (``"model.encoder"``).
    """
    local = find_local(model_id_or_path)
    if local is None or not (local / "config.json").is_file():
        raise MissingWeightsError(missing_message(model_id_or_path, what, section))
    return local


def architecture_config(model_id_or_path: str, what: str, section: str) -> dict[str, Any]:
    """config.json of a model for a random-init build: local copy first, then the packaged one."""
    local = find_local(model_id_or_path)
    if local is not None and (local / "config.json").is_file():
        return json.loads((local / "config.json").read_text(encoding="utf-8"))
    shipped = shipped_config(model_id_or_path)
    if shipped is None:
        raise MissingWeightsError(
            f"no config.json for {what} '{model_id_or_path}': not on disk and not shipped with "
            f"cora-kit (shipped: google/siglip2-so400m-patch16-256, Qwen/Qwen3-0.6B). "
            + missing_message(model_id_or_path, what, section)
        )
    return shipped
