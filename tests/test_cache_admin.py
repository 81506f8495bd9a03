"""Feature cache dtype (bf16 halves it), ``cora-kit cache info`` and ``cache prune``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from test_train_fake import FakeCoraModel, make_splits, tiny_config

from cora_kit.cli import main
from cora_kit.errors import ConfigError
from cora_kit.train import cache_admin
from cora_kit.train.stages import FeatureProvider


def _fill(tmp: Path, stage: int, dtype: str, n: int = 8) -> FeatureProvider:
    torch.manual_seed(0)
    model = FakeCoraModel(tiny_config())
    p = FeatureProvider(model, stage, str(tmp), torch.device("cpu"), batch_size=4, dtype=dtype)
    p.fill(make_splits(n, 1, 1).train)
    return p


def _data_bytes(p: FeatureProvider) -> int:
    return sum(t.numel() * t.element_size() for t in p.cache.get(list(p.cache._index)).values())


def test_bf16_cache_halves_the_stored_features_and_serves_rounded_float32(tmp_path: Path) -> None:
    items = make_splits(8, 1, 1).train
    f32 = _fill(tmp_path / "a", 2, "fp32")
    b16 = _fill(tmp_path / "b", 2, "bf16")
    assert _data_bytes(b16) * 2 == _data_bytes(f32)
    shards32 = sum(f.stat().st_size for f in f32.cache.dir.glob("shard-*"))
    shards16 = sum(f.stat().st_size for f in b16.cache.dir.glob("shard-*"))
    assert shards16 < 0.75 * shards32  # headers are the same size; data halves
    x32, x16 = f32.features(items), b16.features(items)
    assert x16.dtype == torch.float32
    # final features are made from the bf16 prefix and rounded again: bf16-close to fp32
    assert (x16 - x32).abs().max() <= 2**-7 * x32.abs().max()
    # the prefix (Stage 1) is the fp32 prefix rounded once, nothing else
    p32 = f32.prefix_cache.get(list(f32.prefix_cache._index))
    p16 = b16.prefix_cache.get(list(p32))
    assert all(p16[h].dtype == torch.bfloat16 and torch.equal(p16[h], p32[h].to(torch.bfloat16)) for h in p32)
    # a feature computed fresh (cache miss) equals the cached one: both rounded to bf16
    fresh = FeatureProvider(b16.model, 2, str(tmp_path / "c"), torch.device("cpu"), dtype="bf16")
    assert torch.equal(fresh.features(items[:3]), x16[:3])
    assert json.loads((b16.cache.dir / "key.json").read_text())["dtype"] == "torch.bfloat16"
    assert b16.cache.dir.name != f32.cache.dir.name  # one namespace per dtype


def test_cache_dtype_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bf16"):
        FeatureProvider(FakeCoraModel(tiny_config()), 1, str(tmp_path), torch.device("cpu"), dtype="int8")
    with pytest.raises(ConfigError, match="feature_cache.dtype"):
        tiny_config(**{"feature_cache.dtype": "fp8"})


def test_cache_info_lists_namespaces_with_size_entries_and_last_use(tmp_path: Path, capsys) -> None:
    s1 = _fill(tmp_path, 1, "fp32", n=8)
    s2 = _fill(tmp_path, 2, "bf16", n=6)
    (tmp_path / "notes").mkdir()
    assert main(["cache", "info", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    by_id = {n["id"]: n for n in info["namespaces"]}
    # stage 2 in bf16 made its final features from a bf16 prefix namespace of its own
    assert set(by_id) == {s1.prefix_cache.dir.name, s2.prefix_cache.dir.name, s2.cache.dir.name}
    pre, pre16, fin = (by_id[s1.prefix_cache.dir.name], by_id[s2.prefix_cache.dir.name], by_id[s2.cache.dir.name])
    assert (pre["kind"], pre["dtype"], pre["entries"]) == ("prefix", "float32", 8)
    assert (pre16["kind"], pre16["dtype"], pre16["entries"]) == ("prefix", "bfloat16", 6)
    assert (fin["kind"], fin["dtype"], fin["entries"]) == ("final", "bfloat16", 6)
    assert fin["bytes"] == sum(f.stat().st_size for f in s2.cache.dir.glob("shard-*.safetensors"))
    assert info["total_bytes"] == pre["bytes"] + pre16["bytes"] + fin["bytes"]
    assert abs(fin["last_used"] - time.time()) < 60
    assert info["foreign"] == [str(tmp_path / "notes")]
    assert main(["cache", "info", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "3 namespace(s)" in text and "bfloat16" in text and "not a cora-kit cache namespace" in text


def _age(ns_dir: Path, days: float) -> None:
    old = time.time() - days * 86400
    for f in ns_dir.iterdir():
        os.utime(f, (old, old))


def test_prune_keep_and_older_than(tmp_path: Path, capsys) -> None:
    s1 = _fill(tmp_path, 1, "fp32")
    s2 = _fill(tmp_path, 2, "fp32")
    s3 = _fill(tmp_path, 2, "bf16")
    prefix, final32, final16, prefix16 = s1.prefix_cache.dir, s2.cache.dir, s3.cache.dir, s3.prefix_cache.dir
    assert s2.prefix_cache.dir == prefix  # fp32 stages share one prefix namespace
    _age(final32, 10)
    _age(prefix, 40)
    (tmp_path / "notes").mkdir()
    # dry run: lists, deletes nothing
    assert main(["cache", "prune", str(tmp_path), "--older-than", "7d", "--dry-run"]) == 0
    assert "would remove 2 namespace(s)" in capsys.readouterr().out
    assert prefix.is_dir() and final32.is_dir()
    # older than 7 days, but the prefix (given by a unique prefix of its id) is kept
    assert main(["cache", "prune", str(tmp_path), "--older-than", "7d", "--keep-namespaces", prefix.name[:8]]) == 0
    assert prefix.is_dir() and not final32.exists() and final16.is_dir()
    # keep only the bf16 ones: everything else goes, foreign folders stay
    assert main(["cache", "prune", str(tmp_path), "--keep-namespaces", f"{final16.name},{prefix16.name}"]) == 0
    assert not prefix.exists() and final16.is_dir() and prefix16.is_dir() and (tmp_path / "notes").is_dir()


def test_prune_refuses_unclear_requests(tmp_path: Path, capsys) -> None:
    _fill(tmp_path, 1, "fp32")
    for args, msg in (
        ([], "needs --keep-namespaces and/or --older-than"),
        (["--keep-namespaces", "abcdef0"], "is not a namespace here"),
        (["--older-than", "3 weeks"], "give a number and a unit"),
    ):
        assert main(["cache", "prune", str(tmp_path), *args]) == 2
        assert msg in capsys.readouterr().err.replace("\n", " ")
    assert len(cache_admin.namespaces(tmp_path)[0]) == 1  # nothing deleted
    assert main(["cache", "info", str(tmp_path / "missing")]) == 2


def test_parse_duration() -> None:
    assert cache_admin.parse_duration("90m") == 5400
    assert cache_admin.parse_duration("1.5d") == 1.5 * 86400
    assert cache_admin.parse_duration("2w") == 14 * 86400


def test_a_run_with_a_bf16_cache_trains_and_stores_bf16(tmp_path: Path) -> None:
    from test_train_fake import fake_factory

    from cora_kit.train.engine import run

    cfg = tiny_config(**{"feature_cache.dtype": "bf16"})
    result = run(cfg, tmp_path / "runs" / "r", splits=make_splits(16, 4, 4), model_factory=fake_factory,
                 feature_cache_dir=tmp_path / "cache", progress=False)
    assert result.scores is not None and all(s.steps > 0 for s in result.stages.values())
    found, _ = cache_admin.namespaces(tmp_path / "cache")
    assert found and {n.dtype for n in found} == {"bfloat16"}
