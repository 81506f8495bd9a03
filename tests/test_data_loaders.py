"""QuIC-360 / CORA / Stage-1 loaders: parsing, grouped references, every bad-row case,
and the torch datasets (decoding and tiling in DataLoader workers)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cora_kit.data.csv_loaders import ImageItem, Sample, load_images, load_split
from cora_kit.data.dataset import (
    CaptionDataset,
    PanoramaDataset,
    caption_dataset,
    collate,
    decode_erp,
    make_loader,
    panorama_dataset,
)
from cora_kit.errors import DataError
from cora_kit.geometry import TileLayout, ViewCamera
from cora_kit.interfaces import TiledViews

URL = "https://live.staticflickr.com/65535/{}.jpg"


def _pano(path: Path, h: int = 16, w: int = 32, value: int = 0) -> Path:
    arr = np.full((h, w, 3), value, np.uint8)
    arr[:, : w // 2, 0] = 200
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "imgs"
    root.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        _pano(root / f"{name}.jpg", value=40 * i)
    return root


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


QUIC = """url,query,annotation
{a},plants,"There are green plants, and trees."
{a},plants,Plants everywhere.
{b},weather,It is sunny.
{a},people,Two people walk.
{a},plants,Some potted plants.
"""


def test_quic360_urls_map_to_image_root_and_references_group(tmp_path, images):
    f = _csv(tmp_path / "valid.csv", QUIC.format(a=URL.format("a"), b=URL.format("b")))
    report = load_split(f, image_root=images)
    assert report.format == "quic360" and report.num_rows == 5 and not report.skipped
    assert [s.query for s in report] == ["plants", "weather", "people"]
    plants = report[0]
    assert isinstance(plants, Sample)
    assert plants.references == ("There are green plants, and trees.", "Plants everywhere.", "Some potted plants.")
    assert plants.answer == plants.references[0] and plants.rows == (2, 3, 6)
    assert plants.image_path == str(images / "a.jpg") and plants.url == URL.format("a")
    assert len({s.id for s in report}) == 3 and plants.id == "a#0" and report[2].id == "a#1"


def test_quic360_without_kind_column_has_no_kind(tmp_path, images):
    f = _csv(tmp_path / "valid.csv", QUIC.format(a=URL.format("a"), b=URL.format("b")))
    assert [s.kind for s in load_split(f, image_root=images)] == [None, None, None]


KINDED = """url,query,annotation,kind
a.jpg,what colour?,red,colour
a.jpg,what colour?,it is red,colour
b.jpg,where?,left,where
a.jpg,anything?,yes,
"""


def test_optional_kind_column_is_read_per_image_and_query(tmp_path, images):
    report = load_split(_csv(tmp_path / "k.csv", KINDED), image_root=images)
    assert [(s.query, s.kind, s.references) for s in report] == [
        ("what colour?", "colour", ("red", "it is red")), ("where?", "where", ("left",)), ("anything?", None, ("yes",)),
    ]
    # kind before the other columns, upper case header: still found
    moved = "KIND,url,query,annotation\ncolour,a.jpg,q,red\n"
    assert load_split(_csv(tmp_path / "m.csv", moved), image_root=images)[0].kind == "colour"


def test_conflicting_kind_names_file_and_row(tmp_path, images):
    f = _csv(tmp_path / "c.csv", "url,query,annotation,kind\na.jpg,q,red,colour\na.jpg,q,it is red,where\n")
    with pytest.raises(DataError, match=r"c.csv: row 3: kind 'where' differs from 'colour' of row 2"):
        load_split(f, image_root=images)
    report = load_split(f, image_root=images, on_bad_row="skip")
    assert report.skipped == {"conflicting kind": 1} and report[0].references == ("red",)


def test_folder_with_split_files_and_val_alias(tmp_path, images):
    _csv(tmp_path / "valid.csv", QUIC.format(a=URL.format("a"), b=URL.format("b")))
    assert len(load_split(tmp_path, "val", image_root=images)) == 3
    with pytest.raises(DataError, match="no train.csv"):
        load_split(tmp_path, "train", image_root=images)


def test_cora_csv_with_relative_local_paths(tmp_path, images):
    f = _csv(
        tmp_path / "train.csv",
        "url,instruction,response\nimgs/a.jpg,Describe the panorama,A room.\nimgs/b.jpg,Describe the panorama,A park.\n",
    )
    report = load_split(f)  # relative to the CSV's folder
    assert report.format == "cora" and [s.answer for s in report] == ["A room.", "A park."]
    # with an image root, a path like data/quic360/valid/images/x.jpg maps by file name
    g = _csv(tmp_path / "t2.csv", "url,instruction,response\nsome/other/dir/c.jpg,q,r\n")
    assert load_split(g, image_root=images)[0].image_path == str(images / "c.jpg")


def test_a_dataset_folder_given_as_a_relative_path_finds_its_images(tmp_path, images, monkeypatch):
    # `cora-kit run` reads data/synth relative to the working directory
    (tmp_path / "data" / "set").mkdir(parents=True)
    f = _csv(
        tmp_path / "data" / "set" / "train.csv",
        "url,instruction,response\nimgs/a.jpg,Describe the panorama,A room.\n",
    )
    (f.parent / "imgs").symlink_to(tmp_path / "imgs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    report = load_split(Path("data/set/train.csv"))
    assert not report.skipped and Path(report[0].image_path).resolve() == (tmp_path / "imgs" / "a.jpg").resolve()
    assert len(load_split(Path("data/set"), "train")) == 1
    assert load_split(Path("data/set/train.csv"), image_root=Path("data/set/imgs"))[0].answer == "A room."


def test_header_whitespace_and_extra_columns(tmp_path, images):
    f = _csv(tmp_path / "x.csv", f"id, url , query, annotation\n7,{URL.format('c')},q,r\n")
    assert load_split(f, image_root=images)[0].references == ("r",)


def _bad_cases(images: Path, tmp_path: Path) -> dict[str, tuple[str, str, str]]:
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    _pano(tmp_path / "square.png", 16, 16)
    a = URL.format("a")
    return {
        # case: (csv text, expected row, expected reason regex)
        "empty query": (f"url,query,annotation\n{a},q,ok\n{a}, ,text\n", "row 3", "empty 'query'"),
        "empty answer": (f"url,query,annotation\n{a},q,\n", "row 2", "empty 'annotation'"),
        "missing image": (f"url,query,annotation\n{a},q,ok\n{URL.format('zzz')},q,ok\n", "row 3", "image not found: .*zzz.jpg"),
        "unreadable image": (f"url,query,annotation\n{tmp_path / 'broken.jpg'},q,ok\n", "row 2", ".*broken.jpg: cannot read image"),
        "non-2:1 image": (f"url,query,annotation\n{tmp_path / 'square.png'},q,ok\n", "row 2", ".*square.png: 16x16 is not an equirectangular panorama"),
        "duplicate row": (f"url,query,annotation\n{a},q,ok\n{a},q,other\n{a},q,ok\n", "row 4", "duplicate of row 2"),
        "malformed row": (f"url,query,annotation\n{a},q\n", "row 2", "has 2 fields, header has 3"),
        "url without root": (f"url,query,annotation\n{a},q,ok\n", "row 2", r"image is a URL \(.*a.jpg\); URLs are not fetched.*'a.jpg'"),
    }


@pytest.mark.parametrize(
    "case",
    ["empty query", "empty answer", "missing image", "unreadable image", "non-2:1 image",
     "duplicate row", "malformed row", "url without root"],
)
def test_every_bad_row_names_file_row_and_reason(tmp_path, images, case):
    text, row, reason = _bad_cases(images, tmp_path)[case]
    f = _csv(tmp_path / "bad.csv", text)
    root = None if case == "url without root" else images
    with pytest.raises(DataError, match=rf"bad\.csv: {row}: {reason}"):
        load_split(f, image_root=root)


def test_missing_column_names_file_and_columns(tmp_path, images):
    f = _csv(tmp_path / "nocol.csv", "url,question,annotation\nx,q,a\n")
    with pytest.raises(DataError, match=r"nocol\.csv: row 1: missing column 'query'.*found columns \(url, question, annotation\)"):
        load_split(f, image_root=images)
    with pytest.raises(DataError, match="missing column"):  # not skippable
        load_split(f, image_root=images, on_bad_row="skip")


def test_skip_policy_counts_what_was_skipped_and_why(tmp_path, images):
    (tmp_path / "broken.jpg").write_bytes(b"junk")
    a, b = URL.format("a"), URL.format("b")
    text = (
        "url,query,annotation\n"
        f"{a},q,ok\n{a},,x\n{a},q2,\n{URL.format('zzz')},q,ok\n{a},q,ok\n{b},q,fine\n"
        f"{tmp_path / 'broken.jpg'},q,ok\n{URL.format('zzz')},q3,ok\n"
    )
    report = load_split(_csv(tmp_path / "mixed.csv", text), image_root=images, on_bad_row="skip")
    assert [s.answer for s in report] == ["ok", "fine"]
    assert dict(report.skipped) == {
        "empty query": 1, "empty annotation": 1, "missing image": 2, "duplicate row": 1, "unreadable image": 1,
    }
    assert "skipped 6 rows" in report.summary() and "2 missing image" in report.summary()
    assert any("mixed.csv: row 5: image not found" in p for p in report.problems)
    with pytest.raises(DataError, match="on_bad_row must be"):
        load_split(tmp_path / "mixed.csv", image_root=images, on_bad_row="ignore")


def test_failed_load_touches_nothing(tmp_path, images):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "features.safetensors").write_bytes(b"keep me")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    f = _csv(tmp_path / "bad.csv", f"url,query,annotation\n{URL.format('zzz')},q,a\n")
    before[f] = hashlib.sha256(f.read_bytes()).hexdigest()
    with pytest.raises(DataError):
        load_split(f, image_root=images)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_stage1_csv_folder_and_captioning_csv(tmp_path, images):
    f = _csv(tmp_path / "stage1_train.csv", f"url\n{URL.format('a')}\n{URL.format('b')}\n")
    report = load_images(f, image_root=images)
    assert report.format == "stage1" and [i.id for i in report] == ["a", "b"]
    assert isinstance(report[0], ImageItem)
    # a folder holding stage1_<split>.csv
    assert len(load_images(tmp_path, "train", image_root=images)) == 2
    # a plain folder of panoramas
    folder = load_images(images)
    assert folder.format == "folder" and [i.id for i in folder] == ["a", "b", "c"]
    # a captioning CSV: its distinct images
    q = _csv(tmp_path / "q.csv", QUIC.format(a=URL.format("a"), b=URL.format("b")))
    assert [i.id for i in load_images(q, image_root=images)] == ["a", "b"]


def test_folder_of_panoramas_bad_image(tmp_path, images):
    _pano(images / "d.png", 10, 30)
    with pytest.raises(DataError, match=r"d\.png: 30x10 is not an equirectangular panorama"):
        load_images(images)
    assert [i.id for i in load_images(images, on_bad_row="skip")] == ["a", "b", "c"]


# --- datasets ------------------------------------------------------------------------


def _tiny_tiler(erp: torch.Tensor) -> TiledViews:
    """A contract-following test tiler: 2 views = the left and right halves, 8x8."""
    halves = [erp[..., : erp.shape[-1] // 2], erp[..., erp.shape[-1] // 2 :]]
    views = torch.stack([torch.nn.functional.interpolate(h, size=(8, 8), mode="area") for h in halves], 1)
    layout = TileLayout((ViewCamera(-90, 0, 180, 8), ViewCamera(90, 0, 180, 8)), name="halves")
    return TiledViews(views=views, layout=layout)


def test_decode_erp_shape_range_and_error(tmp_path, images):
    erp = decode_erp(images / "a.jpg")
    assert erp.shape == (3, 16, 32) and erp.dtype == torch.float32
    assert 0.0 <= float(erp.min()) and float(erp.max()) <= 1.0
    assert float(erp[0, :, :16].mean()) > 0.7  # the red left half
    assert decode_erp(images / "a.jpg", (8, 16)).shape == (3, 8, 16)
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk\.png: cannot read image"):
        decode_erp(tmp_path / "junk.png")


def test_caption_dataset_items_and_loader_with_workers(tmp_path, images):
    f = _csv(tmp_path / "valid.csv", QUIC.format(a=URL.format("a"), b=URL.format("b")))
    ds = caption_dataset(f, image_root=images, tiler=_tiny_tiler)
    item = ds[0]
    assert set(item) == {"id", "image_path", "erp", "query", "answer", "references", "views"}
    assert item["erp"].shape == (3, 16, 32) and item["views"].shape == (2, 3, 8, 8)
    assert item["answer"] == "There are green plants, and trees." and len(item["references"]) == 3
    serial = list(make_loader(ds, batch_size=2, num_workers=0))
    parallel = list(make_loader(ds, batch_size=2, num_workers=2))
    assert [b["id"] for b in serial] == [b["id"] for b in parallel] == [["a#0", "b#0"], ["a#1"]]
    for s, p in zip(serial, parallel):
        assert s["erp"].shape[1:] == (3, 16, 32) and torch.equal(s["erp"], p["erp"])
        assert s["views"].shape[1:] == (2, 3, 8, 8) and torch.equal(s["views"], p["views"])
        assert isinstance(s["references"][0], list)
    a = [b["id"] for b in make_loader(ds, batch_size=1, shuffle=True, seed=5)]
    assert a == [b["id"] for b in make_loader(ds, batch_size=1, shuffle=True, seed=5)]


def test_panorama_dataset_and_collate_errors(tmp_path, images):
    ds = panorama_dataset(images, erp_size=(8, 16))
    assert isinstance(ds, PanoramaDataset) and len(ds) == 3
    batch = collate([ds[0], ds[1]])
    assert batch["erp"].shape == (2, 3, 8, 16) and batch["id"] == ["a", "b"]
    _pano(images / "big.png", 32, 64)
    mixed = PanoramaDataset(load_images(images))
    with pytest.raises(ValueError, match="different shapes"):
        collate([mixed[i] for i in range(len(mixed))])
    assert isinstance(CaptionDataset([]), CaptionDataset)


def test_synthetic_set_loads_with_the_same_loaders(tmp_path):
    from cora_kit.data.synth import ensure_synthetic

    root = ensure_synthetic(tmp_path / "s", 3, 2, 2, (32, 64), seed=0)
    train = load_split(root, "train")
    assert train.format == "quic360" and len(train) == 12  # 3 images x 4 queries (v2)
    assert all(3 <= len(s.references) <= 5 for s in train) and all(s.kind for s in train)
    assert len(load_images(root, "val")) == 2 and load_images(root, "val").format == "stage1"
    item = CaptionDataset(train)[0]
    assert item["erp"].shape == (3, 32, 64) and item["answer"] == train[0].references[0]
