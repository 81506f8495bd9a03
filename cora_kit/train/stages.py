"""Per-stage step functions, the schedule and the frozen-feature provider.

Seed table (CORA-architecture.md, "Three-stage progressive training")::

    stage 1: tiles only; encoder last k blocks + resampler + overlap head; overlap loss
    stage 2: resampler (low lr) + PanoramaProjector; LM CE + w * overlap loss (frozen head)
    stage 3: LoRA + PanoramaProjector; LM CE

Every step function takes the model, the cached frozen-encoder output of a micro-batch
``[B,V,P,Dv]`` and the text of its items, and returns ``(loss, logs)``; ``LATENT_STEP_FNS``
(stages 2-3) take the resampler's output ``[B,V,P',D]`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from cora_kit.config import StageConfig
from cora_kit.data.dataset import TiledImages, tile_function, tiled_batches
from cora_kit.train.feature_cache import FeatureCache, file_hash, image_hash
from cora_kit.train.protocol import CoraModelLike

#: ``feature_cache.dtype`` -> storage dtype
CACHE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}

StepFn = Callable[[CoraModelLike, torch.Tensor, Sequence[dict[str, Any]], StageConfig], tuple[torch.Tensor, dict[str, float]]]


# --- step functions -------------------------------------------------------------------


def stage1_step(model: CoraModelLike, hidden: torch.Tensor, items: Sequence[dict[str, Any]], cfg: StageConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Overlap loss on the views' latent: last k encoder blocks -> resampler -> head."""
    feats = model.encode_trainable(hidden, 1)
    latent = model.resample(feats)
    loss, logs = model.overlap_loss(latent)
    return loss, {"overlap_loss": float(loss.detach()), **_prefixed("overlap", logs)}


def stage2_step(model: CoraModelLike, hidden: torch.Tensor, items: Sequence[dict[str, Any]], cfg: StageConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """LM cross-entropy + ``overlap_weight`` x overlap loss through the frozen head."""
    return stage2_latent_step(model, model.resample(model.encode_trainable(hidden, 2)), items, cfg)


def stage2_latent_step(model: CoraModelLike, latent: torch.Tensor, items: Sequence[dict[str, Any]], cfg: StageConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``stage2_step`` from the views' latent ``[B,V,P',D]`` (made once when the resampler is held)."""
    lm, lm_logs = model.lm_loss(latent, [i["query"] for i in items], [i["answer"] for i in items])
    logs = {"lm_loss": float(lm.detach()), **_prefixed("lm", lm_logs)}
    loss = lm
    if cfg.overlap_weight > 0:
        ov, ov_logs = model.overlap_loss(latent)
        loss = lm + cfg.overlap_weight * ov
        logs.update({"overlap_loss": float(ov.detach()), **_prefixed("overlap", ov_logs)})
    return loss, logs


def stage3_step(model: CoraModelLike, hidden: torch.Tensor, items: Sequence[dict[str, Any]], cfg: StageConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """LM cross-entropy; encoder and resampler are frozen, so their pass runs without grad."""
    with torch.no_grad():
        latent = model.resample(model.encode_trainable(hidden, 3))
    return stage3_latent_step(model, latent, items, cfg)


def stage3_latent_step(model: CoraModelLike, latent: torch.Tensor, items: Sequence[dict[str, Any]], cfg: StageConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``stage3_step`` from the views' latent ``[B,V,P',D]``."""
    lm, lm_logs = model.lm_loss(latent, [i["query"] for i in items], [i["answer"] for i in items])
    return lm, {"lm_loss": float(lm.detach()), **_prefixed("lm", lm_logs)}


STEP_FNS: dict[int, StepFn] = {1: stage1_step, 2: stage2_step, 3: stage3_step}
#: the steps of stages 2-3 on a latent made beforehand (``cora_kit.train.held_latents``)
LATENT_STEP_FNS: dict[int, StepFn] = {2: stage2_latent_step, 3: stage3_latent_step}


def _prefixed(prefix: str, logs: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in logs.items()}


# --- schedule -------------------------------------------------------------------------


def plan_steps(n_items: int, cfg: StageConfig, world_size: int = 1) -> tuple[int, int]:
    """(micro-batches per epoch per rank, total optimizer steps) for a stage."""
    per_rank = n_items // world_size
    if per_rank < 1:
        raise ValueError(f"{n_items} items cannot be split over {world_size} processes")
    micro = math.ceil(per_rank / cfg.batch_size)
    total = math.ceil(cfg.epochs * micro / cfg.grad_accum)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return micro, max(total, 1)


def warmup_cosine(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear warmup over ``warmup_ratio * total`` steps, then cosine to 0."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        span = max(total_steps - warmup, 1)
        progress = min((step - warmup) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def warmup_stable_decay(total_steps: int, warmup_ratio: float, decay_ratio: float) -> Callable[[int], float]:
    """lr multiplier: linear warmup over ``warmup_ratio * total`` steps, 1 until the last
    ``decay_ratio * total`` steps, then linear to 0 (WSD)."""
    warmup = int(round(warmup_ratio * total_steps))
    decay = max(int(round(decay_ratio * total_steps)), 1)
    decay_start = max(total_steps - decay, warmup)

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if step < decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - decay_start) / max(total_steps - decay_start, 1))

    return factor


def lr_factor(cfg: StageConfig, total_steps: int) -> Callable[[int], float]:
    """The stage's lr multiplier per optimizer step (``cfg.schedule``)."""
    if cfg.schedule == "wsd":
        return warmup_stable_decay(total_steps, cfg.warmup_ratio, cfg.decay_ratio)
    return warmup_cosine(total_steps, cfg.warmup_ratio)


def epoch_order(n_items: int, seed: int, stage: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """This rank's item order in ``epoch``: one seeded permutation, strided over ranks."""
    g = torch.Generator().manual_seed(1_000_003 * seed + 10_007 * stage + epoch)
    perm = torch.randperm(n_items, generator=g).tolist()
    per_rank = n_items // world_size
    return perm[rank::world_size][:per_rank]


def kind_grouped_order(kinds: Sequence[str | None], seed: int, stage: int, epoch: int, rank: int = 0,
                       world_size: int = 1) -> list[int]:
    """``epoch_order`` with the items grouped by query kind: one block per kind, the blocks
    in a seeded order, the items of a block in a seeded order (a curriculum that trains one
    kind at a time; ``StageConfig.kind_grouped_epochs``). Items without a kind are an error."""
    missing = [i for i, k in enumerate(kinds) if k is None]
    if missing:
        raise ValueError(f"kind_grouped_epochs needs a query kind on every training item; item {missing[0]} has none")
    perm = epoch_order(len(kinds), seed, stage, epoch)
    g = torch.Generator().manual_seed(1_000_003 * seed + 10_007 * stage + epoch + 7_919)
    names = sorted({str(k) for k in kinds})
    rank_of = {name: r for r, name in zip(torch.randperm(len(names), generator=g).tolist(), names)}
    grouped = sorted(perm, key=lambda i: rank_of[str(kinds[i])])  # stable: the seeded order within a kind
    per_rank = len(kinds) // world_size
    return grouped[rank::world_size][:per_rank]


# --- frozen features ------------------------------------------------------------------


class FeatureProvider:
    """Frozen-encoder output per item, computed once and served from feature caches.

    Two caches, both keyed by image content hash:

    - the *prefix* cache holds the output of the encoder blocks that are frozen in every
      stage (``model.encode_frozen(views, 1)``, all views); its key is
      ``model.encoder_cache_key(1)``, the same for every stage and for every run with the
      same encoder weights, so an ablation grid runs the expensive prefix once per image;
    - for stages 2 and 3 the *final* cache holds the whole frozen encoder's output, made
      from the cached prefix by the last k blocks (``encode_trainable(prefix, 1)``, no
      grad); its key includes those blocks' weights as Stage 1 left them.

    Items are dicts with an ``"image_path"`` (hashed from the file's bytes, so a cache hit
    never decodes it) or an in-memory ``"erp"`` ``[3,H,W]`` (hashed from its pixels). What
    is missing is decoded (uint8) and tiled by ``cora_kit.data.TiledImages`` in
    ``num_workers`` DataLoader workers (``fill``; ``features`` computes the few misses of a
    batch in-process) and only the views reach the encoder.

    Stage 1 serves the prefix of ``views`` (the tiles: the seed's Stage 1 sees no global
    view). ``dtype`` is the storage dtype (``feature_cache.dtype``: ``"fp32"`` or
    ``"bf16"``); fresh features are rounded to it too, and served as float32. ``stats``
    (shared by the providers of one run) counts ``encoder_image_passes`` (images run through
    the prefix) and ``cache_hits`` (prefix lookups served from disk).
    """

    def __init__(
        self, model: CoraModelLike, stage: int, cache_dir: str, device: torch.device, batch_size: int = 8,
        views: Sequence[int] | None = None, stats: dict[str, int] | None = None, dtype: str = "fp32",
        num_workers: int = 0,
    ) -> None:
        self.model = model
        self.stage = stage
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.views = list(views) if views is not None else None
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("encoder_image_passes", 0)
        self.stats.setdefault("cache_hits", 0)
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"feature cache dtype must be one of {', '.join(CACHE_DTYPES)}; got {dtype!r}")
        self.dtype = CACHE_DTYPES[dtype]
        self.prefix_cache = FeatureCache(cache_dir, f"{model.encoder_cache_key(1)}|prefix|views=all", self.dtype)
        self.cache = (
            self.prefix_cache
            if stage == 1
            else FeatureCache(cache_dir, f"{model.encoder_cache_key(stage)}|final|views=all", self.dtype)
        )
        self._hashes: dict[str, str] = {}

    def item_hash(self, item: dict[str, Any]) -> str:
        path = item.get("image_path")
        if path and path in self._hashes:
            return self._hashes[path]
        if "erp" in item:  # in-memory pixels (a Record's lazily decoded "erp" is not "in" it)
            h = image_hash(item["erp"])
        else:
            h = file_hash(path, getattr(item, "erp_size", None))
        if path:
            self._hashes[path] = h
        return h

    def _forked(self) -> Any:
        """A forked RNG, so a cache hit or miss never changes the training RNG."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _view_batches(self, items: dict[str, dict[str, Any]], workers: int) -> Iterator[tuple[list[str], torch.Tensor]]:
        """(hashes, views ``[b,V,3,s,s]``) for ``items`` (hash -> item), ``batch_size`` at a time."""
        keys = list(items)
        data = TiledImages([items[h] for h in keys], tile_function(self.model))
        workers = workers if len(keys) > self.batch_size else 0
        for index, views in tiled_batches(data, self.batch_size, workers):
            yield [keys[i] for i in index], views

    @torch.no_grad()
    def _computed(self, items: dict[str, dict[str, Any]], workers: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """This provider's features for ``items`` (hash -> item), one batch at a time, each
        stored as it is made: Stage 1 the prefix; stages 2-3 the final features, from the
        cached prefix where there is one, else from views decoded and tiled by one
        DataLoader over all the rest (``workers`` processes)."""
        lost: set[str] = set()
        with_prefix = [h for h in items if h in self.prefix_cache] if self.stage != 1 else []
        for start in range(0, len(with_prefix), self.batch_size):
            sub = with_prefix[start : start + self.batch_size]
            got = self.prefix_cache.get(sub)
            self.stats["cache_hits"] += len(got)
            lost.update(h for h in sub if h not in got)  # corrupt: dropped, remade from the image
            if got:
                yield self._finish(got)
        need = {h: i for h, i in items.items() if h not in self.prefix_cache or h in lost}
        for sub, views in self._view_batches(need, workers):
            with self._forked():
                feats = self.model.encode_frozen(views.to(self.device), 1).to("cpu", self.dtype)
            fresh = dict(zip(sub, feats, strict=True))
            self.prefix_cache.put(fresh)
            self.stats["encoder_image_passes"] += len(sub)
            yield self._finish(fresh)

    def _finish(self, prefixes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage 1: the prefixes; stages 2-3: final features made from them and stored."""
        if self.stage == 1:
            return prefixes
        keys = list(prefixes)
        hidden = torch.stack([prefixes[h] for h in keys]).to(self.device, torch.float32)
        with self._forked():
            final = self.model.encode_trainable(hidden, 1).to("cpu", self.dtype)
        out = dict(zip(keys, final, strict=True))
        self.cache.put(out)
        return out

    def fill(self, items: Sequence[dict[str, Any]], on_chunk: Callable[[int], None] | None = None) -> int:
        """Store the features of every item not cached yet; returns how many were made.
        Decoding and tiling run in ``num_workers`` DataLoader workers (one loader)."""
        self.cache.refresh()
        self.prefix_cache.refresh()
        todo: dict[str, dict[str, Any]] = {}
        cached: set[str] = set()
        for item in items:
            h = self.item_hash(item)
            if h in self.cache:
                cached.add(h)
            elif h not in todo:
                todo[h] = item
        self.stats["cache_hits"] += len(cached)
        for made in self._computed(todo, self.num_workers):
            if on_chunk is not None:
                on_chunk(len(made))
        return len(todo)

    def features(self, items: Sequence[dict[str, Any]]) -> torch.Tensor:
        """``[B,V,P,Dv]`` for ``items`` (missing/corrupt entries are recomputed and stored);
        Stage 1: the prefix of ``views`` only."""
        hashes = [self.item_hash(i) for i in items]
        got = self.cache.get(hashes)
        missing = {h: i for h, i in zip(hashes, items, strict=True) if h not in got}
        for made in self._computed(missing):
            got.update(made)
        out = torch.stack([got[h] for h in hashes])
        if self.stage == 1 and self.views is not None:
            out = out[:, self.views]
        return out.to(self.device, torch.float32)


def stage1_views(model: CoraModelLike) -> list[int]:
    """Stage 1 runs on the tiles only (the views the overlap correspondences cover)."""
    return list(model.correspondences.view_indices or model.layout.tile_indices)


__all__ = [
    "LATENT_STEP_FNS",
    "STEP_FNS",
    "FeatureProvider",
    "epoch_order",
    "kind_grouped_order",
    "plan_steps",
    "stage1_step",
    "stage2_latent_step",
    "stage2_step",
    "stage3_latent_step",
    "stage3_step",
    "lr_factor",
    "warmup_cosine",
    "warmup_stable_decay",
]
