"""Frozen-encoder feature cache: safetensors shards keyed by image content + encoder + tiler.

The frozen part of the encoder is computed once per image and reused by every epoch, stage
run and ablation cell that shares it (DESIGN.md section 8). A *namespace* folder holds the
shards of one cache key (``CoraModel.encoder_cache_key(stage)``: encoder weights/config,
tiler config and which prefix is frozen). Each shard is one safetensors file holding
several images' features ``[V,P,Dv]``, the tensor name being the image's content hash;
its metadata repeats the full cache key and a CRC32 of every entry.

Nothing is trusted: a shard that cannot be parsed (truncated, corrupt) is deleted, an
entry whose key, shape or checksum does not match is dropped, and the caller recomputes
what is missing. Writes are atomic (temp file + rename), so concurrent runs sharing one
cache folder (an ablation grid, DDP ranks) never see half a shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors_bytes

from cora_kit.fs import atomic_write_bytes, write_text_atomic

log = logging.getLogger(__name__)

FORMAT = "cora-kit-features-v1"
#: empty file in a namespace folder whose mtime is the last time a run opened it
LAST_USED = "last_used"


def image_hash(erp: torch.Tensor) -> str:
    """Content hash of one decoded ERP ``[3,H,W]`` (values, shape and dtype)."""
    t = erp.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.uint8 else t.numpy().tobytes())
    return h.hexdigest()[:32]


def _crc(t: torch.Tensor) -> str:
    return f"{zlib.crc32(t.contiguous().view(torch.uint8).numpy().tobytes()):08x}"


class FeatureCache:
    """Features ``[V,P,Dv]`` per image hash, for one cache key, under ``root``.

    ``get(hashes)`` returns what is present and valid; ``put(entries)`` writes one shard.
    ``stats`` counts hits, misses, writes and rejected (stale/corrupt) entries.
    """

    def __init__(self, root: str | Path, key: str, dtype: torch.dtype = torch.float32) -> None:
        self.key = key
        self.dtype = dtype
        digest = hashlib.sha256(f"{FORMAT}|{key}|{dtype}".encode()).hexdigest()[:24]
        self.dir = Path(root) / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.is_file():
            payload = json.dumps({"format": FORMAT, "key": key, "dtype": str(dtype)}, indent=2)
            write_text_atomic(key_file, payload)
        (self.dir / LAST_USED).touch()  # `cora-kit cache info` / `prune --older-than` read it
        self.stats = {"hits": 0, "misses": 0, "writes": 0, "rejected": 0}
        self._index: dict[str, tuple[Path, str, list[int]]] = {}
        self._scanned: set[Path] = set()
        self.refresh()

    # -- index ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Scan shards not seen yet (another process may have added some)."""
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            if shard in self._scanned:
                continue
            self._scanned.add(shard)
            try:
                with safe_open(str(shard), framework="pt") as fh:
                    meta = fh.metadata() or {}
                    names = set(fh.keys())
            except Exception as exc:  # truncated / corrupt header
                log.warning("feature cache: dropping unreadable shard %s (%s)", shard, exc)
                self.stats["rejected"] += 1
                shard.unlink(missing_ok=True)
                continue
            if meta.get("format") != FORMAT or meta.get("key") != self.key:
                log.warning("feature cache: dropping stale shard %s (cache key differs)", shard)
                self.stats["rejected"] += 1
                continue
            entries = json.loads(meta.get("entries", "{}"))
            for name, info in entries.items():
                if name in names:
                    self._index[name] = (shard, info["crc"], list(info["shape"]))

    def __contains__(self, h: str) -> bool:
        return h in self._index

    def __len__(self) -> int:
        return len(self._index)

    # -- read / write --------------------------------------------------------------------

    def get(self, hashes: Iterable[str]) -> dict[str, torch.Tensor]:
        """Valid cached features of ``hashes`` (absent, stale or corrupt ones are left out)."""
        out: dict[str, torch.Tensor] = {}
        by_shard: dict[Path, list[str]] = {}
        wanted = list(hashes)
        for h in wanted:
            if h in self._index:
                by_shard.setdefault(self._index[h][0], []).append(h)
        for shard, names in by_shard.items():
            try:
                with safe_open(str(shard), framework="pt") as fh:
                    for h in names:
                        t = fh.get_tensor(h)
                        _, crc, shape = self._index[h]
                        if list(t.shape) != shape or _crc(t) != crc:
                            log.warning("feature cache: entry %s in %s is corrupt; recomputing", h, shard)
                            self.stats["rejected"] += 1
                            del self._index[h]
                            continue
                        out[h] = t
            except Exception as exc:
                log.warning("feature cache: shard %s unreadable (%s); recomputing", shard, exc)
                self.stats["rejected"] += 1
                for h in names:
                    self._index.pop(h, None)
                shard.unlink(missing_ok=True)
        self.stats["hits"] += len(out)
        self.stats["misses"] += len(wanted) - len(out)
        return out

    def put(self, entries: Mapping[str, torch.Tensor]) -> Path | None:
        """Write ``{hash: features [V,P,Dv]}`` as one shard (atomically)."""
        todo = {h: t.detach().to("cpu", self.dtype).contiguous() for h, t in entries.items() if h not in self._index}
        if not todo:
            return None
        name_digest = hashlib.sha256("|".join(sorted(todo)).encode()).hexdigest()[:16]
        shard = self.dir / f"shard-{name_digest}.safetensors"
        info = {h: {"crc": _crc(t), "shape": list(t.shape)} for h, t in todo.items()}
        meta = {"format": FORMAT, "key": self.key, "entries": json.dumps(info, sort_keys=True)}
        atomic_write_bytes(shard, save_safetensors_bytes(todo, metadata=meta))
        self._scanned.add(shard)
        for h, i in info.items():
            self._index[h] = (shard, i["crc"], i["shape"])
        self.stats["writes"] += len(todo)
        return shard


__all__ = ["FORMAT", "LAST_USED", "FeatureCache", "image_hash"]
