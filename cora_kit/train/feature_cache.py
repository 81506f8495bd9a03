"""Frozen-encoder feature cache: safetensors shards keyed by image content + encoder + tiler.

The frozen part of the encoder is computed once per image and reused by every epoch, stage
run and ablation cell that shares it (DESIGN.md section 8). A *namespace* folder holds the
shards of one cache key (``CoraModel.encoder_cache_key(stage)``: encoder weights/config,
tiler config and which prefix is frozen). Each shard is one safetensors file holding
several images' features ``[V,P,Dv]``, the tensor name being the image's content hash
(``file_hash``: the file's bytes and the decode size, so a cache hit never decodes the
image; ``image_hash``: the pixels of an in-memory panorama); its metadata repeats the full
cache key and a CRC32 of every entry.

Nothing is trusted: a shard that cannot be parsed (truncated, corrupt) is deleted, an
entry whose key, shape or checksum does not match is dropped, and the caller recomputes
what is missing. Writes are atomic (``cora_kit.fs``: temp file, fsync, rename), so
concurrent runs sharing one cache folder (an ablation grid, DDP ranks) never see half a
shard. Shards are never modified once written,
so the index of a namespace (which entry lives in which shard) is read once per process
and shared by every ``FeatureCache`` on it; ``refresh`` reads only shards added since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors_bytes

from cora_kit.fs import atomic_write_bytes, write_text_atomic

log = logging.getLogger(__name__)

FORMAT = "cora-kit-features-v2"  # v2: entries keyed by file bytes (``file_hash``)
#: empty file in a namespace folder whose mtime is the last time a run opened it
LAST_USED = "last_used"
_READ_CHUNK = 1 << 20


def image_hash(erp: torch.Tensor) -> str:
    """Content hash of one in-memory ERP ``[3,H,W]`` (values, shape and dtype)."""
    t = erp.detach().to("cpu").contiguous()
    h = hashlib.sha256()
    h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()[:32]


_FILE_HASHES: dict[tuple[str, int, int, tuple[int, int] | None], str] = {}


def file_hash(path: str | Path, size: tuple[int, int] | None = None) -> str:
    """Content hash of an image file (its bytes) decoded at ``size`` (None: as stored).

    Reading and hashing a file costs a small part of decoding it. Memoised per process by
    (path, byte size, modification time): a file rewritten in place is hashed again."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns, tuple(size) if size is not None else None)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256(f"file|{memo[3]}|".encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                h.update(chunk)
        _FILE_HASHES[memo] = h.hexdigest()[:32]
    return _FILE_HASHES[memo]


def _crc(t: torch.Tensor) -> str:
    return f"{zlib.crc32(memoryview(t.contiguous().view(torch.uint8).numpy())):08x}"


class _Index:
    """Which shard holds each entry of one namespace, shared by the caches of a process."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Path, str, list[int]]] = {}
        self.scanned: set[tuple[Path, int, int]] = set()  # (shard, byte size, mtime)


_INDEXES: dict[Path, _Index] = {}


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
        shared = _INDEXES.setdefault(self.dir.resolve(), _Index())
        self._index = shared.entries
        self._scanned = shared.scanned
        self.refresh()

    # -- index ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Scan shards not seen yet (another process may have added some)."""
        found = []
        with os.scandir(self.dir) as it:
            for e in it:
                if e.name.startswith("shard-") and e.name.endswith(".safetensors"):
                    st = e.stat()
                    found.append((Path(e.path), st.st_size, st.st_mtime_ns))
        for seen in sorted(found):
            if seen in self._scanned:
                continue
            self._scanned.add(seen)
            shard = seen[0]
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
        st = shard.stat()
        self._scanned.add((shard, st.st_size, st.st_mtime_ns))
        for h, i in info.items():
            self._index[h] = (shard, i["crc"], i["shape"])
        self.stats["writes"] += len(todo)
        return shard


__all__ = ["FORMAT", "LAST_USED", "FeatureCache", "file_hash", "image_hash"]
