"""What a feature-cache folder holds, and removing what is no longer used.

A cache folder (``<runs>/.feature-cache`` or ``--feature-cache DIR``) has one *namespace*
folder per cache key (``cora_kit.train.feature_cache``): an encoder's frozen prefix or
final features, for one encoder, tiler and storage dtype. Every ablation cell that
changes what Stage 1 trains makes new final-feature namespaces, so a long-lived folder
grows; ``namespaces(root)`` lists them (size, entries, last use) and ``prune`` deletes
whole namespaces, never single entries (a run recomputes whatever it misses).

Folders without a cora-kit ``key.json`` are listed as foreign and never deleted.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from safetensors import safe_open

from cora_kit.errors import ConfigError
from cora_kit.train.feature_cache import FORMAT, LAST_USED

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Namespace:
    """One namespace folder: ``id`` is its folder name (a digest of key + dtype)."""

    id: str
    path: Path
    key: str
    kind: str  # "prefix", "final" or "" (a key this version does not label)
    dtype: str
    shards: int
    entries: int
    bytes: int
    last_used: float  # seconds since the epoch

    def to_json(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def parse_duration(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise ConfigError(f"--older-than {text!r}: give a number and a unit s, m, h, d or w (e.g. 30d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _read_namespace(folder: Path) -> Namespace | None:
    key_file = folder / "key.json"
    try:
        meta = json.loads(key_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    key = str(meta.get("key", ""))
    names: set[str] = set()
    size = 0
    shards = sorted(folder.glob("shard-*.safetensors"))
    stamps = [key_file.stat().st_mtime]
    for shard in shards:
        st = shard.stat()
        size += st.st_size
        stamps.append(st.st_mtime)
        try:
            with safe_open(str(shard), framework="pt") as fh:
                names.update(json.loads((fh.metadata() or {}).get("entries", "{}")))
        except Exception:  # unreadable shard: counted in bytes, dropped by the next run
            continue
    marker = folder / LAST_USED
    if marker.is_file():
        stamps.append(marker.stat().st_mtime)
    parts = key.rsplit("|", 2)  # "<encoder key>|prefix|views=all"
    kind = parts[-2] if len(parts) == 3 and parts[-2] in ("prefix", "final") else ""
    dtype = str(meta.get("dtype", "")).replace("torch.", "")
    return Namespace(folder.name, folder, key, kind, dtype, len(shards), len(names), size, max(stamps))


def namespaces(root: str | Path) -> tuple[list[Namespace], list[Path]]:
    """``(namespaces sorted by last use, newest first; foreign folders)`` under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such feature-cache folder")
    found, foreign = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        ns = _read_namespace(folder)
        if ns is None:
            foreign.append(folder)
        else:
            found.append(ns)
    found.sort(key=lambda n: (-n.last_used, n.id))
    return found, foreign


def resolve_ids(found: Sequence[Namespace], wanted: Sequence[str]) -> set[str]:
    """Namespace ids from full ids or unique prefixes (>= 6 characters); an unknown or
    ambiguous one is a ConfigError (a typo must never delete what was meant to be kept)."""
    ids = [n.id for n in found]
    out: set[str] = set()
    for text in wanted:
        text = text.strip()
        if not text:
            continue
        hits = [i for i in ids if i == text] or ([i for i in ids if i.startswith(text)] if len(text) >= 6 else [])
        if len(hits) != 1:
            why = "matches several namespaces" if len(hits) > 1 else "is not a namespace here"
            raise ConfigError(f"--keep-namespaces {text!r} {why}; `cora-kit cache info DIR` lists them")
        out.add(hits[0])
    return out


def select_for_pruning(
    found: Sequence[Namespace], keep: Sequence[str] = (), older_than_s: float | None = None,
    now: float | None = None,
) -> list[Namespace]:
    """Namespaces to delete: not in ``keep`` and, with ``older_than_s``, last used longer
    ago than that. Neither given is a ConfigError (nothing would say what to remove)."""
    if not keep and older_than_s is None:
        raise ConfigError("cache prune needs --keep-namespaces and/or --older-than (nothing selected)")
    kept = resolve_ids(found, keep)
    now = time.time() if now is None else now
    return [
        n for n in found
        if n.id not in kept and (older_than_s is None or now - n.last_used > older_than_s)
    ]


def prune(root: str | Path, keep: Sequence[str] = (), older_than: str | None = None,
          dry_run: bool = False) -> tuple[list[Namespace], list[Namespace]]:
    """Delete the selected namespace folders; returns ``(removed, kept)``."""
    found, _ = namespaces(root)
    chosen = select_for_pruning(found, keep, parse_duration(older_than) if older_than else None)
    if not dry_run:
        for ns in chosen:
            shutil.rmtree(ns.path)
    gone = {n.id for n in chosen}
    return chosen, [n for n in found if n.id not in gone]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{max(seconds, 0):.0f} s ago"


__all__ = ["Namespace", "human_age", "human_bytes", "namespaces", "parse_duration", "prune", "resolve_ids",
           "select_for_pruning"]
