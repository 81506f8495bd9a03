"""The synthetic 360-degree set: determinism, spherical geometry, captions true of their scenes.

Version 1 (the scenes and captions of ``scene.py`` / ``captions.py``) stays reproducible;
version 2 (the default, query kinds) is tested in ``test_data_synth_v2.py``."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from cora_kit.data.captions import NUMBER_WORDS
from cora_kit.data.render import object_mask, render_erp
from cora_kit.data.scene import COLOURS, SHAPES, Scene, SceneObject, bounding_radius
from cora_kit.data.synth import SynthParams, ensure_synthetic, generate_synthetic, load_scenes, read_metadata
from cora_kit.errors import DataError

RED = np.array([0.86, 0.08, 0.08]) * 255
SKY, GROUND = (0.5, 0.66, 0.86), (0.45, 0.37, 0.28)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one(obj: SceneObject, h: int = 128) -> np.ndarray:
    return render_erp(Scene(SKY, GROUND, (obj,)), h, 2 * h)


def _red(img: np.ndarray) -> np.ndarray:
    return np.abs(img.astype(float) - RED).sum(-1) < 60  # shading keeps it within ~25/channel


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "s"
    return generate_synthetic(root, SynthParams(n_train=6, n_val=2, n_test=60, height=64, width=128, seed=3, version=1))


#: sha256 over (relative path, bytes) of every file of the v1 set below, as generated
#: before version 2 existed: version 1 must stay byte-identical
V1_DIGEST = "383080d504c96611df35deaaa36693eac14958881e50877185b6c662c761ee47"


def test_version_1_is_reproduced_byte_for_byte(tmp_path):
    root = generate_synthetic(tmp_path / "v1", SynthParams(n_train=4, n_val=2, n_test=3, height=32, width=64, seed=5, version=1))
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            digest.update(str(p.relative_to(root)).encode())
            digest.update(p.read_bytes())
    assert digest.hexdigest() == V1_DIGEST
    assert read_metadata(root)["version"] == 1
    assert (root / "test.csv").read_text().splitlines()[0] == "url,query,annotation"  # no kind column


# --- determinism --------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path):
    params = SynthParams(n_train=4, n_val=2, n_test=2, height=32, width=64, seed=7)
    a = _tree_hashes(generate_synthetic(tmp_path / "a", params))
    b = _tree_hashes(generate_synthetic(tmp_path / "b", params))
    assert a == b
    assert {"metadata.json", "README.md", "scenes.jsonl", "train.csv", "val.csv", "test.csv",
            "stage1_train.csv", "stage1_val.csv", "images/train_000000.png"} <= set(a)
    assert _tree_hashes(generate_synthetic(tmp_path / "w", params, workers=2)) == a  # any worker count
    other = _tree_hashes(generate_synthetic(tmp_path / "c", SynthParams(4, 2, 2, 32, 64, seed=8)))
    assert other["images/train_000000.png"] != a["images/train_000000.png"]


def test_image_depends_only_on_seed_split_index(tmp_path):
    small = _tree_hashes(generate_synthetic(tmp_path / "a", SynthParams(2, 1, 1, 32, 64, seed=1)))
    big = _tree_hashes(generate_synthetic(tmp_path / "b", SynthParams(5, 3, 1, 32, 64, seed=1)))
    for name in ("images/train_000001.png", "images/val_000000.png", "images/test_000000.png"):
        assert small[name] == big[name]


def test_metadata_records_generator_and_parameters(small_set):
    meta = read_metadata(small_set)
    assert meta["generator"] == "cora-kit-synth360" and meta["version"] == 1
    assert meta["params"]["seed"] == 3 and meta["params"]["height"] == 64
    assert meta["splits"]["test"]["images"] == 60
    assert "cora-kit-synth360" in (small_set / "README.md").read_text()


# --- geometry -----------------------------------------------------------------------


def test_object_at_lon_90_is_in_the_yaw_90_tile_not_yaw_270():
    py360convert = pytest.importorskip("py360convert")
    img = _one(SceneObject("ball", "red", 90.0, 0.0, 15.0))
    right = py360convert.e2p(img, 90, 90, 0, (64, 64))
    left = py360convert.e2p(img, 90, -90, 0, (64, 64))  # yaw 270
    front = py360convert.e2p(img, 90, 0, 0, (64, 64))
    assert _red(right).sum() > 180  # radius tan(15)/tan(45)*32 = 8.6 px: ~230 px
    assert _red(left).sum() == 0 and _red(front).sum() == 0
    # centred in the tile: a ball at the tile centre
    ys, xs = np.nonzero(_red(right))
    assert abs(xs.mean() - 31.5) < 1.0 and abs(ys.mean() - 31.5) < 1.0


def test_object_in_the_cora_e2p_tiles():
    import cora_kit

    if "e2p" not in {p.name for p in cora_kit.list_plugins("tiler")}:
        pytest.skip("e2p tiler not registered yet")
    import torch

    img = _one(SceneObject("cube", "red", 90.0, 10.0, 15.0))
    tiler = cora_kit.create("tiler", "e2p", size=64)
    tiled = tiler(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    yaws = {i: v.yaw_deg for i, v in enumerate(tiled.layout.views) if not v.is_global}
    views = (tiled.views[0].permute(0, 2, 3, 1).numpy() * 255)
    by_yaw = {yaw % 360: _red(views[i]).sum() for i, yaw in yaws.items()}
    assert by_yaw[90] > 150 and by_yaw[270] == 0 and by_yaw[0] == 0


def test_seam_straddling_object_appears_at_both_edges():
    img = _one(SceneObject("ball", "red", 178.0, -20.0, 12.0))
    red = _red(img)
    assert red[:, :4].any() and red[:, -4:].any()
    assert not red[:, 100:150].any()  # and nowhere near the centre
    # its two parts meet across the seam at the same rows
    rows_left = set(np.nonzero(red[:, 0])[0])
    rows_right = set(np.nonzero(red[:, -1])[0])
    assert len(rows_left & rows_right) >= 0.8 * min(len(rows_left), len(rows_right))


def _great_circle_deg(lon1, lat1, lon2, lat2):
    lon1, lat1, lon2, lat2 = map(np.radians, (lon1, lat1, lon2, lat2))
    cos = np.sin(lat1) * np.sin(lat2) + np.cos(lat1) * np.cos(lat2) * np.cos(lon2 - lon1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.mark.parametrize("lon,lat", [(0.0, 0.0), (120.0, 70.0), (-179.0, -65.0)])
def test_ball_is_a_spherical_cap_including_near_poles(lon, lat):
    """Independent check: pixels of a ball are exactly those within its angular radius."""
    h, w, r = 90, 180, 12.0
    mask = object_mask(SceneObject("ball", "red", lon, lat, r), h, w)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    plon = ((cols + 0.5) / w - 0.5) * 360
    plat = (0.5 - (rows + 0.5) / h) * 180
    dist = _great_circle_deg(plon, plat, lon, lat)
    expected = dist <= r
    assert (mask != expected).sum() <= 2  # only pixels on the boundary itself may round differently
    # the ERP stretches it horizontally by 1/cos(lat)
    widths = mask.sum(1)
    height_rows = mask.any(1).sum()
    assert widths.max() / height_rows == pytest.approx(1 / math.cos(math.radians(lat)), rel=0.25)


def test_sampled_scenes_respect_the_rules(small_set):
    scenes = load_scenes(small_set)
    assert len(scenes) == 68
    for scene in scenes.values():
        objs = scene.objects
        assert 2 <= len(objs) <= 6
        assert len({o.name for o in objs}) == len(objs)
        for o in objs:
            assert o.colour in COLOURS and o.shape in SHAPES
            assert 20.0 <= 2 * o.radius <= 50.0
            assert abs(o.lat) > bounding_radius(o)  # never crosses the horizon
            assert abs(o.lat) + bounding_radius(o) < 90  # never covers a pole
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                d = _great_circle_deg(a.lon, a.lat, b.lon, b.lat)
                assert d > bounding_radius(a) + bounding_radius(b)


def test_rendered_image_shows_every_object(small_set):
    from PIL import Image

    rec = json.loads((small_set / "scenes.jsonl").read_text().splitlines()[0])
    scene = Scene.from_json(rec["scene"])
    img = np.asarray(Image.open(small_set / rec["image"]))
    assert img.shape == (64, 128, 3)
    for o in scene.objects:
        mask = object_mask(o, 64, 128)
        assert mask.sum() > 0
        mean = img[mask].mean(0) / 255
        assert np.abs(mean - np.asarray(COLOURS[o.colour])).max() < 0.12


# --- captions ------------------------------------------------------------------------


def _sector(lon: float) -> str:
    lon = (lon + 180) % 360 - 180
    if -45 <= lon < 45:
        return "front"
    if 45 <= lon < 135:
        return "right"
    if -135 <= lon < -45:
        return "left"
    return "behind"


PHRASE = {"front": "in front of the viewer", "right": "on the right of the viewer",
          "behind": "behind the viewer", "left": "on the left of the viewer"}
SHORT = {"front": "in front", "right": "on the right", "behind": "behind", "left": "on the left"}
LIST_RE = re.compile(r"^(?:a (\w+ \w+))(?: and a (\w+ \w+))?$")


def _listed(text: str) -> set[str]:
    if text == "nothing":
        return set()
    m = LIST_RE.match(text)
    assert m, text
    return {g for g in m.groups() if g}


def _check_claim(scene: Scene, query: str, answer: str) -> None:
    """Re-derive the canonical answer from the scene, independently of the generator."""
    by_name = {o.name: o for o in scene.objects}
    if m := re.fullmatch(r"where is the (\w+ \w+)\?", query):
        assert answer == SHORT[_sector(by_name[m[1]].lon)]
    elif m := re.fullmatch(r"what is (.+ the viewer|behind the viewer)\?", query):
        sector = {v: k for k, v in PHRASE.items()}[m[1]]
        assert _listed(answer) == {o.name for o in scene.objects if _sector(o.lon) == sector}
    elif m := re.fullmatch(r"what is (above|below) the horizon\?", query):
        want = {o.name for o in scene.objects if (o.lat > 0) == (m[1] == "above")}
        assert _listed(answer) == want
    elif query == "describe the object above the horizon":
        sky = [o for o in scene.objects if o.lat > 0]
        assert len(sky) == 1 and answer == f"a {sky[0].name} {SHORT[_sector(sky[0].lon)]}"
    elif m := re.fullmatch(r"how many (\w+) objects are there\?", query):
        assert NUMBER_WORDS.index(answer) == sum(o.colour == m[1] for o in scene.objects)
    elif m := re.fullmatch(r"is there a (\w+ \w+)\?", query):
        assert answer == ("yes" if m[1] in by_name else "no")
    elif m := re.fullmatch(r"what colour is the (\w+)\?", query):
        objs = [o for o in scene.objects if o.shape == m[1]]
        assert len(objs) == 1 and answer == objs[0].colour
    elif m := re.fullmatch(r"what is to the (left|right) of the (\w+ \w+)\?", query):
        ref = by_name[m[2]]
        sign = -1 if m[1] == "left" else 1
        offsets = {o.name: (sign * (o.lon - ref.lon)) % 360 for o in scene.objects if o is not ref}
        near = [n for n, off in offsets.items() if 0 < off < 180]
        expect = f"a {min(near, key=offsets.get)}" if near else "nothing"
        assert answer == expect
    else:
        raise AssertionError(f"unknown query template: {query!r}")


def test_every_caption_is_true_of_its_scene(small_set):
    scenes = load_scenes(small_set)
    with (small_set / "test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    groups: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        groups.setdefault((r["url"], r["query"]), []).append(r["annotation"])
    assert len(groups) == 120  # 2 queries per image
    kinds = set()
    for (url, query), refs in groups.items():
        scene = scenes[Path(url).stem]
        assert 3 <= len(refs) <= 5 and len(set(refs)) == len(refs)
        _check_claim(scene, query, refs[0])
        kinds.add(query.split()[0:2][1])
        # every paraphrase carries the canonical answer's content words
        for ref in refs[1:]:
            content = set(refs[0].split()) - {"a", "and", "the", "of", "nothing", "zero", "one"}
            assert content <= set(ref.replace(",", "").split()) | {"viewer"}, (refs[0], ref)
        assert all(1 <= len(r.split()) <= 12 for r in refs)
    assert len(kinds) >= 5


def test_vocabulary_is_small_and_answers_short(small_set):
    with (small_set / "test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    words = {w for r in rows for w in re.findall(r"[a-z]+", (r["query"] + " " + r["annotation"]))}
    assert len(words) < 80
    canonical = {}
    for r in rows:
        canonical.setdefault((r["url"], r["query"]), r["annotation"])
    assert max(len(a.split()) for a in canonical.values()) <= 7


# --- ensure_synthetic ----------------------------------------------------------------


def test_ensure_synthetic_reuses_and_refuses_mismatch(tmp_path):
    out = tmp_path / "s"
    ensure_synthetic(out, 2, 1, 1, (32, 64), seed=0)
    before = _tree_hashes(out)
    ensure_synthetic(out, 2, 1, 1, "32x64", seed=0)  # reuse: nothing rewritten
    assert _tree_hashes(out) == before
    with pytest.raises(DataError, match=r"differs in: n_train, seed"):
        ensure_synthetic(out, 3, 1, 1, (32, 64), seed=1)
    with pytest.raises(DataError, match=r"differs in: max_objects, queries_per_image, version"):
        ensure_synthetic(out, 2, 1, 1, (32, 64), seed=0, version=1)
    assert _tree_hashes(out) == before
    (out / "images" / "train_000001.png").unlink()
    with pytest.raises(DataError, match="incomplete"):
        ensure_synthetic(out, 2, 1, 1, (32, 64), seed=0)


def test_bad_size_and_existing_dir(tmp_path):
    with pytest.raises(DataError, match="2:1"):
        ensure_synthetic(tmp_path / "x", 1, 1, 1, "64x64")
    (tmp_path / "y").mkdir()
    with pytest.raises(DataError, match="metadata.json"):
        ensure_synthetic(tmp_path / "y", 1, 1, 1, (32, 64))
    with pytest.raises(DataError, match="already exists"):
        generate_synthetic(tmp_path / "y", SynthParams(1, 1, 1, 32, 64))
    assert not list(tmp_path.glob(".*tmp*"))
