"""``StageConfig.kind_grouped_epochs``: the first epochs present the items one query kind at a time."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from test_train_fake import fake_factory, make_splits, tiny_config

from cora_kit.errors import CoraKitError
from cora_kit.train.engine import run
from cora_kit.train.stages import epoch_order, kind_grouped_order

KINDS = ["seam", "where", "high", "seam", "where", "high", "seam", "where", "high", "presence"] * 3


def _blocks(order: list[int]) -> list[str]:
    """The kinds of ``order`` with runs of one kind collapsed: one entry per block."""
    return [k for k, _ in itertools.groupby(KINDS[i] for i in order)]


def test_grouped_order_is_a_permutation_with_one_block_per_kind() -> None:
    order = kind_grouped_order(KINDS, seed=3, stage=2, epoch=0)
    assert sorted(order) == list(range(len(KINDS)))
    blocks = _blocks(order)
    assert sorted(blocks) == sorted(set(KINDS))  # each kind once: contiguous


def test_grouped_order_keeps_the_epochs_shuffle_within_a_kind() -> None:
    order = kind_grouped_order(KINDS, seed=3, stage=2, epoch=1)
    shuffled = epoch_order(len(KINDS), seed=3, stage=2, epoch=1)
    for kind in set(KINDS):
        assert [i for i in order if KINDS[i] == kind] == [i for i in shuffled if KINDS[i] == kind]


def test_grouped_order_is_seeded() -> None:
    a = kind_grouped_order(KINDS, seed=3, stage=2, epoch=0)
    assert a == kind_grouped_order(KINDS, seed=3, stage=2, epoch=0)
    others = [kind_grouped_order(KINDS, seed=3, stage=2, epoch=e) for e in range(1, 6)]
    assert any(o != a for o in others)
    assert len({tuple(_blocks(o)) for o in [a, *others]}) > 1  # the kinds' order changes between epochs


def test_grouped_order_over_ranks_covers_each_item_once() -> None:
    parts = [kind_grouped_order(KINDS, seed=1, stage=2, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(len(KINDS)))
    assert all(len(p) == len(KINDS) // 3 for p in parts)


def test_grouped_order_needs_every_kind() -> None:
    with pytest.raises(ValueError, match="item 2 has none"):
        kind_grouped_order(["seam", "high", None], seed=0, stage=2, epoch=0)


def test_grouped_stage_trains_on_kinds_and_refuses_data_without_them(tmp_path: Path) -> None:
    splits = make_splits()
    for i, item in enumerate(splits.train):
        item["kind"] = ("a", "b", "c")[i % 3]
    config = tiny_config(**{"stages.stage2.kind_grouped_epochs": 1})
    result = run(config, tmp_path / "kinds", splits=splits, feature_cache_dir=tmp_path / "cache",
                 model_factory=fake_factory, progress=False, evaluate=False)
    assert result.stages[2].steps == 6

    with pytest.raises(CoraKitError, match="stage 2: kind_grouped_epochs needs a query kind.*item 'train-0/0' has none"):
        run(config, tmp_path / "plain", splits=make_splits(), feature_cache_dir=tmp_path / "cache",
            model_factory=fake_factory, progress=False, evaluate=False)
    assert not (tmp_path / "plain" / "stage2" / "model.safetensors").exists()
