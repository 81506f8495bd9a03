"""Feature cache: hits, stale keys, truncated shards and flipped bytes are never trusted."""

from __future__ import annotations

from pathlib import Path

import torch
from test_train_fake import FakeCoraModel, make_splits, tiny_config

from cora_kit.train.feature_cache import FeatureCache, image_hash
from cora_kit.train.stages import FeatureProvider


def _feats(n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {image_hash(torch.full((3, 4, 8), float(i))): torch.randn(5, 16, 8, generator=g) for i in range(n)}


def test_roundtrip_and_reopen(tmp_path: Path) -> None:
    entries = _feats()
    cache = FeatureCache(tmp_path, "key-a")
    cache.put(entries)
    again = FeatureCache(tmp_path, "key-a")
    got = again.get(entries)
    assert got.keys() == entries.keys()
    assert all(torch.equal(got[h], entries[h]) for h in entries)
    assert again.stats["hits"] == 3


def test_other_key_is_a_miss(tmp_path: Path) -> None:
    entries = _feats()
    FeatureCache(tmp_path, "key-a").put(entries)
    other = FeatureCache(tmp_path, "key-b")
    assert other.get(entries) == {}


def test_truncated_shard_is_dropped(tmp_path: Path) -> None:
    entries = _feats()
    shard = FeatureCache(tmp_path, "k").put(entries)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    cache = FeatureCache(tmp_path, "k")
    assert cache.get(entries) == {}
    assert cache.stats["rejected"] >= 1 and not shard.exists()


def test_flipped_bytes_fail_the_checksum(tmp_path: Path) -> None:
    entries = _feats()
    shard = FeatureCache(tmp_path, "k").put(entries)
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor's data
    shard.write_bytes(bytes(data))
    cache = FeatureCache(tmp_path, "k")
    got = cache.get(entries)
    assert len(got) == 2 and cache.stats["rejected"] == 1


def test_stale_shard_with_foreign_key_is_ignored(tmp_path: Path) -> None:
    entries = _feats()
    a = FeatureCache(tmp_path, "key-a")
    shard = a.put(entries)
    b = FeatureCache(tmp_path, "key-b")
    shard.rename(b.dir / shard.name)  # a shard copied into the wrong namespace
    assert FeatureCache(tmp_path, "key-b").get(entries) == {}


def test_provider_encodes_once_and_recomputes_corrupt_entries(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FakeCoraModel(tiny_config())
    items = make_splits(8, 1, 1).train
    calls = []
    original = model.encode_frozen
    model.encode_frozen = lambda views, stage: calls.append(views.shape[0]) or original(views, stage)  # type: ignore[method-assign]
    p = FeatureProvider(model, 2, str(tmp_path), torch.device("cpu"), batch_size=4)
    assert p.fill(items) == 8 and sum(calls) == 8
    first = p.features(items[:4])
    assert sum(calls) == 8  # served from the cache
    for shard in p.cache.dir.glob("shard-*.safetensors"):
        shard.write_bytes(shard.read_bytes()[:100])
    p2 = FeatureProvider(model, 2, str(tmp_path), torch.device("cpu"), batch_size=4)
    again = p2.features(items[:4])
    # the final features are remade from the cached encoder prefix: no new encoder pass
    assert sum(calls) == 8 and torch.equal(first, again)
    assert p2.stats == {"encoder_image_passes": 0, "cache_hits": 4}
    for shard in list(p.cache.dir.glob("shard-*.safetensors")) + list(p.prefix_cache.dir.glob("shard-*.safetensors")):
        shard.write_bytes(shard.read_bytes()[:100])
    p3 = FeatureProvider(model, 2, str(tmp_path), torch.device("cpu"), batch_size=4)
    assert torch.equal(p3.features(items[:4]), first)
    assert sum(calls) == 12 and p3.stats["encoder_image_passes"] == 4
    direct = original(model.tile(torch.stack([i["erp"] for i in items[:4]])), 2)
    assert torch.allclose(first, direct)


def test_cache_key_follows_trained_encoder_blocks(tmp_path: Path) -> None:
    model = FakeCoraModel(tiny_config())
    before = model.encoder_cache_key(2)
    with torch.no_grad():
        model.block2.weight.add_(1.0)  # what Stage 1 trains
    assert model.encoder_cache_key(2) != before
    assert FeatureProvider(model, 2, str(tmp_path), torch.device("cpu")).cache.key.startswith(model.encoder_cache_key(2))


def test_prefix_is_shared_between_stages_and_runs(tmp_path: Path) -> None:
    """Stage 1 and Stages 2-3 (and later runs with the same encoder) share one prefix pass."""
    torch.manual_seed(0)
    model = FakeCoraModel(tiny_config())
    items = make_splits(6, 1, 1).train
    stats: dict[str, int] = {}
    FeatureProvider(model, 1, str(tmp_path), torch.device("cpu"), stats=stats).fill(items)
    assert stats["encoder_image_passes"] == 6
    with torch.no_grad():
        model.block2.weight.add_(1.0)  # Stage 1 trained the last block
    FeatureProvider(model, 2, str(tmp_path), torch.device("cpu"), stats=stats).fill(items)
    assert stats == {"encoder_image_passes": 6, "cache_hits": 6}
    torch.manual_seed(0)
    same_encoder = FakeCoraModel(tiny_config())  # another grid cell: same seed, same encoder
    other_run: dict[str, int] = {}
    FeatureProvider(same_encoder, 1, str(tmp_path), torch.device("cpu"), stats=other_run).fill(items)
    assert other_run == {"encoder_image_passes": 0, "cache_hits": 6}
    torch.manual_seed(1)
    other_seed: dict[str, int] = {}
    FeatureProvider(FakeCoraModel(tiny_config()), 1, str(tmp_path), torch.device("cpu"), stats=other_seed).fill(items)
    assert other_seed["encoder_image_passes"] == 6  # another random encoder: never reused
