"""The training/captioning data path: files decoded as uint8 and tiled in DataLoader
workers (``TiledImages``), features keyed by file bytes so cache hits never decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_fake import FakeCoraModel, tiny_config

import cora_kit
from cora_kit.data import dataset as dataset_mod
from cora_kit.data.dataset import TiledImages, tile_function, tiled_batches
from cora_kit.data.images import read_erp
from cora_kit.errors import DataError
from cora_kit.train.data import Record
from cora_kit.train.feature_cache import file_hash
from cora_kit.train.stages import FeatureProvider


@pytest.fixture
def panoramas(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        p = tmp_path / f"pano{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(p)
        files.append(p)
    return files


def test_read_erp_uint8_is_hwc_memory_without_a_copy(panoramas):
    u8 = read_erp(panoramas[0], dtype=torch.uint8)
    assert u8.shape == (3, 32, 64) and u8.dtype == torch.uint8 and u8.stride() == (1, 192, 3)
    f = read_erp(panoramas[0])
    assert f.is_contiguous() and torch.allclose(f, u8.float() / 255)


def test_workers_give_the_same_views_as_the_main_process(panoramas):
    tiler = cora_kit.create("tiler", "e2p", size=16)
    items = [{"image_path": str(p)} for p in panoramas] + [{"erp": read_erp(panoramas[0])}]  # in-memory float
    data = TiledImages(items, tile_function(tiler))
    inline = list(tiled_batches(data, batch_size=3, num_workers=0))
    workers = list(tiled_batches(data, batch_size=3, num_workers=2))
    assert [i for i, _ in inline] == [i for i, _ in workers] == [[0, 1, 2], [3, 4, 5], [6]]
    for (_, a), (_, b) in zip(inline, workers, strict=True):
        assert torch.equal(a, b)
    direct = tiler(read_erp(panoramas[4], dtype=torch.uint8)).views[0]
    assert torch.equal(inline[1][1][1], direct)  # uint8 through OpenCV, as the tiler does
    exact = tiler(read_erp(panoramas[0])).views[0]  # the in-memory float item: the torch path
    assert torch.equal(inline[2][1][0], exact)


def test_a_bad_file_in_a_worker_is_one_clean_error(panoramas, tmp_path):
    (tmp_path / "junk.png").write_bytes(b"junk")
    tiler = cora_kit.create("tiler", "e2p", size=16)
    data = TiledImages([str(p) for p in panoramas] + [str(tmp_path / "junk.png")], tile_function(tiler))
    with pytest.raises(DataError) as err:
        list(tiled_batches(data, batch_size=2, num_workers=2))
    assert str(err.value).startswith(f"{tmp_path / 'junk.png'}: cannot read image") and "\n" not in str(err.value)


def test_provider_fills_in_workers_and_hits_never_decode(panoramas, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = FakeCoraModel(tiny_config())
    items = [Record(id=p.stem, image_path=str(p)) for p in panoramas]
    seen: list[int] = []
    original = model.encode_frozen
    model.encode_frozen = lambda views, stage: seen.append(views.shape[0]) or original(views, stage)  # type: ignore[method-assign]
    cache = tmp_path / "cache"
    p1 = FeatureProvider(model, 2, str(cache), torch.device("cpu"), batch_size=2, num_workers=2)
    assert p1.fill(items) == 6 and sum(seen) == 6
    inline = FeatureProvider(model, 2, str(tmp_path / "other"), torch.device("cpu"), batch_size=2).features(items)
    assert torch.allclose(p1.features(items), inline)  # workers and the main process agree
    assert p1.item_hash(items[0]) == file_hash(panoramas[0])

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit decoded an image")

    monkeypatch.setattr(dataset_mod, "read_erp", no_decoding)
    p2 = FeatureProvider(model, 2, str(cache), torch.device("cpu"), batch_size=2, num_workers=2)
    assert p2.fill(items) == 0 and torch.equal(p2.features(items), p1.features(items))
    assert p2.stats["encoder_image_passes"] == 0


def test_file_hash_follows_content_and_size(panoramas):
    a = file_hash(panoramas[0])
    assert a == file_hash(panoramas[0]) and a != file_hash(panoramas[0], (16, 32)) and a != file_hash(panoramas[2])
    data = panoramas[0].read_bytes()
    panoramas[0].write_bytes(data + b"\0")  # rewritten in place: hashed again
    assert file_hash(panoramas[0]) != a


def test_workers_forked_after_opencv_ran_threaded_do_not_hang(panoramas):
    """OpenCV's pool ran with 2 threads in this process before the workers are forked."""
    cv2 = pytest.importorskip("cv2")
    tiler = cora_kit.create("tiler", "e2p", size=16)
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        big = torch.randint(0, 256, (1, 3, 512, 1024), dtype=torch.uint8)
        for _ in range(3):
            cora_kit.create("tiler", "e2p")(big)  # the parent's pool runs its threads
        data = TiledImages([str(p) for p in panoramas], tile_function(tiler))
        for _ in range(3):
            assert sum(len(i) for i, _ in tiled_batches(data, 2, num_workers=2)) == len(panoramas)
        assert cv2.getNumThreads() == 2  # restored in the parent
    finally:
        cv2.setNumThreads(before)
