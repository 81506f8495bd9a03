"""The synthetic set v2: determinism, the kind column, answers true of their scenes (re-derived
independently of the generator), the geometry each kind claims (checked with the real e2p
tiler), kind shares and the data card's chance levels."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cora_kit.data.csv_loaders import load_split
from cora_kit.data.kinds import DIRECTIONS, KINDS, query_template
from cora_kit.data.prior import TextPrior
from cora_kit.data.render import object_mask, render_erp
from cora_kit.data.scene import COLOURS, SHAPES, Scene, bounding_radius
from cora_kit.data.synth import SynthParams, generate_synthetic, load_scenes, read_metadata
from cora_kit.data.text import matches


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def v2_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth2") / "s"
    return generate_synthetic(root, SynthParams(n_train=150, n_val=4, n_test=60, height=64, width=128, seed=11))


def _groups(root: Path, split: str) -> dict[tuple[str, str], dict]:
    with (root / f"{split}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[tuple[str, str], dict] = {}
    for r in rows:
        g = out.setdefault((r["url"], r["query"]), {"refs": [], "kinds": set()})
        g["refs"].append(r["annotation"])
        g["kinds"].add(r["kind"])
    return out


# --- determinism and format -----------------------------------------------------------


def test_v2_is_the_default_deterministic_for_any_worker_count(tmp_path):
    params = SynthParams(n_train=5, n_val=2, n_test=3, height=32, width=64, seed=4)
    assert params.version == 2 and params.queries_per_image == 4
    a = _tree_hashes(generate_synthetic(tmp_path / "a", params))
    assert _tree_hashes(generate_synthetic(tmp_path / "b", params)) == a
    assert _tree_hashes(generate_synthetic(tmp_path / "w", params, workers=2)) == a
    other = _tree_hashes(generate_synthetic(tmp_path / "c", SynthParams(5, 2, 3, 32, 64, seed=5)))
    assert other["images/train_000000.png"] != a["images/train_000000.png"]
    meta = read_metadata(tmp_path / "a")
    assert meta["version"] == 2 and "version" not in meta["params"]


def test_every_item_has_one_known_kind_and_the_loader_reads_it(v2_set):
    header = (v2_set / "test.csv").read_text().splitlines()[0]
    assert header == "url,query,annotation,kind"
    groups = _groups(v2_set, "test")
    assert len(groups) == 240  # 60 images x 4 queries
    assert all(len(g["kinds"]) == 1 and next(iter(g["kinds"])) in KINDS for g in groups.values())
    report = load_split(v2_set, "test")
    assert len(report) == 240 and {s.kind for s in report} == set(KINDS)
    # 4 queries per image, of distinct kinds
    per_image: dict[str, list[str]] = {}
    for s in report:
        per_image.setdefault(s.image_path, []).append(s.kind)
    assert all(len(k) == 4 == len(set(k)) for k in per_image.values())


def test_kind_shares_are_equal_by_design(v2_set):
    counts = Counter(s.kind for s in load_split(v2_set, "train", check_images=False))
    total = sum(counts.values())
    assert total == 600
    for kind in KINDS:
        assert abs(counts[kind] / total - 1 / len(KINDS)) < 0.04, (kind, counts)


# --- answers true of their scenes -----------------------------------------------------


def _wrap(d: float) -> float:
    return (d + 180.0) % 360.0 - 180.0


def _horizon(scene: Scene) -> list:
    return [o for o in scene.objects if abs(o.lat) < 45]


def _at_direction(scene: Scene, d: str):
    """The horizon object within 22.5 deg of compass direction ``d`` (exactly one)."""
    lon = 45.0 * DIRECTIONS.index(d)
    near = [o for o in _horizon(scene) if abs(_wrap(o.lon - lon)) < 22.5]
    assert len(near) == 1, (d, near)
    return near[0], lon


def _check(scene: Scene, kind: str, query: str, answer: str) -> None:
    """Re-derive the canonical answer and the kind's geometry from the scene alone."""
    by_colour = Counter(o.colour for o in scene.objects)
    colour_re = "|".join(COLOURS)
    if kind == "where":
        c = re.fullmatch(rf"where is the ({colour_re}) object\?", query)[1]
        (o,) = [o for o in scene.objects if o.colour == c]
        k = round(o.lon / 45.0) % 8
        assert abs(_wrap(o.lon - 45.0 * k)) <= 3.0 + 1e-6 and answer == DIRECTIONS[k]
    elif kind == "shape":
        c = re.fullmatch(rf"what shape is the ({colour_re}) object\?", query)[1]
        (o,) = [o for o in scene.objects if o.colour == c]
        assert answer == o.shape in SHAPES
    elif kind == "presence":
        c = re.fullmatch(rf"is there a ({colour_re}) object\?", query)[1]
        assert answer == ("yes" if by_colour[c] else "no")
    elif kind in ("seam", "tile-boundary"):
        d = re.fullmatch(r"what colour is the object at the (.+)\?", query)[1]
        o, lon = _at_direction(scene, d)
        assert answer == o.colour and by_colour[o.colour] == 1
        assert abs(_wrap(o.lon - lon)) < o.radius  # its centre is within its radius of 45 k: it straddles
        if kind == "seam":
            assert d == "back"
        else:
            assert d not in ("front", "back")
    elif kind == "overlap-count":
        c = re.fullmatch(rf"how many ({colour_re}) objects are there\?", query)[1]
        objs = [o for o in scene.objects if o.colour == c]
        assert answer == ("one", "two")[len(objs) - 1]
        for o in objs:  # the middle of an overlap: 22.5 + 45 k (+-3)
            assert abs(_wrap(o.lon - 22.5 - 45.0 * round((o.lon - 22.5) / 45.0))) <= 3.0 + 1e-6
    elif kind == "relation":
        m = re.fullmatch(rf"what colour is the object (left|right) of the ({colour_re}) object\?", query)
        (ref,) = [o for o in scene.objects if o.colour == m[2]]
        sign = -1 if m[1] == "left" else 1
        offsets = {o: (sign * (o.lon - ref.lon)) % 360 for o in _horizon(scene) if o is not ref}
        near = min((o for o, off in offsets.items() if 0 < off < 180), key=offsets.get)
        assert answer == near.colour and by_colour[near.colour] == 1
        assert offsets[near] >= 84.0  # no 90-deg tile sees both centres
    elif kind == "high":
        assert query == "what colour is the object high above?"
        (o,) = [o for o in scene.objects if o.lat > 45]
        assert answer == o.colour and o.lat - bounding_radius(o) > 45.0
    else:
        raise AssertionError(f"unknown kind {kind}")


def test_every_canonical_answer_is_true_of_its_scene(v2_set):
    scenes = load_scenes(v2_set)
    for split in ("train", "test"):
        for (url, query), g in _groups(v2_set, split).items():
            (kind,) = g["kinds"]
            refs = g["refs"]
            assert 3 <= len(refs) <= 5 and len(set(refs)) == len(refs)
            assert 1 <= len(refs[0].split()) <= 2  # canonical answers are one or two words
            _check(scenes[Path(url).stem], kind, query, refs[0])
            assert all(refs[0] in r for r in refs[1:] if kind not in ("presence", "overlap-count")), refs


def test_scenes_keep_objects_apart_and_colours_unique_except_the_count_pair(v2_set):
    for scene in load_scenes(v2_set).values():
        hor = _horizon(scene)
        assert 2 <= len(hor) <= 6
        for i, a in enumerate(hor):
            assert abs(a.lat) <= 12.0 and 9.0 <= a.radius <= 12.0
            for b in hor[i + 1 :]:
                assert abs(_wrap(a.lon - b.lon)) >= 45.0 - 6.0 - 1e-6
        repeated = [c for c, n in Counter(o.colour for o in scene.objects).items() if n > 1]
        assert len(repeated) <= 1


# --- the geometry each kind claims, seen through the real e2p tiler ------------------


def _tile_pixels(scene: Scene, colour: str, size: int = 64) -> tuple[int, dict[float, np.ndarray]]:
    """Pixels of ``colour`` in the global view and, per tile yaw, the boolean mask."""
    import torch

    import cora_kit

    img = render_erp(scene, 256, 512)
    tiler = cora_kit.create("tiler", "e2p", size=size)
    tiled = tiler(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    views = tiled.views[0].permute(0, 2, 3, 1).numpy()
    target = np.asarray(COLOURS[colour])
    masks = np.abs(views - target).sum(-1) < 0.35  # shading keeps objects within ~0.1 per channel
    glob = [i for i, v in enumerate(tiled.layout.views) if v.is_global][0]
    tiles = {v.yaw_deg % 360: masks[i] for i, v in enumerate(tiled.layout.views) if not v.is_global}
    return int(masks[glob].sum()), tiles


def _first(scenes: dict[str, Scene], v2_set: Path, kind: str, n: int = 3) -> list[tuple[Scene, str, str]]:
    out = []
    for (url, query), g in _groups(v2_set, "test").items():
        if kind in g["kinds"] and len(out) < n:
            out.append((scenes[Path(url).stem], query, g["refs"][0]))
    assert out, kind
    return out


def _touches_edge(mask: np.ndarray) -> bool:
    return bool(mask[:, 0].any() or mask[:, -1].any() or mask[0].any() or mask[-1].any())


def test_high_objects_are_seen_by_the_global_view_only(v2_set):
    scenes = load_scenes(v2_set)
    for scene, _q, colour in _first(scenes, v2_set, "high"):
        alone = Scene(scene.sky, scene.ground, tuple(o for o in scene.objects if o.lat > 45))
        glob, tiles = _tile_pixels(alone, colour)
        assert glob > 0 and all(m.sum() == 0 for m in tiles.values())


def test_seam_objects_straddle_the_erp_edges_and_the_back_tile_sees_them_whole(v2_set):
    scenes = load_scenes(v2_set)
    for scene, _q, colour in _first(scenes, v2_set, "seam"):
        (o,) = [o for o in scene.objects if o.colour == colour]
        mask = object_mask(o, 256, 512)
        assert mask[:, 0].any() and mask[:, -1].any()
        _, tiles = _tile_pixels(Scene(scene.sky, scene.ground, (o,)), colour)
        assert tiles[180.0].sum() > 20 and not _touches_edge(tiles[180.0])


def test_tile_boundary_objects_are_cut_by_the_edges_of_the_neighbouring_tiles(v2_set):
    scenes = load_scenes(v2_set)
    for scene, query, colour in _first(scenes, v2_set, "tile-boundary"):
        d = re.fullmatch(r"what colour is the object at the (.+)\?", query)[1]
        yaw = 45.0 * DIRECTIONS.index(d)
        (o,) = [o for o in scene.objects if o.colour == colour]
        _, tiles = _tile_pixels(Scene(scene.sky, scene.ground, (o,)), colour)
        assert not _touches_edge(tiles[yaw]) and tiles[yaw].sum() > 20
        for side in (yaw - 45.0, yaw + 45.0):
            m = tiles[side % 360]
            assert m.sum() > 0 and _touches_edge(m)


def test_overlap_count_objects_are_seen_whole_by_two_tiles(v2_set):
    scenes = load_scenes(v2_set)
    for scene, query, _answer in _first(scenes, v2_set, "overlap-count"):
        c = re.fullmatch(r"how many (\w+) objects are there\?", query)[1]
        for o in (o for o in scene.objects if o.colour == c):
            _, tiles = _tile_pixels(Scene(scene.sky, scene.ground, (o,)), c)
            whole = [y for y, m in tiles.items() if m.sum() > 20 and not _touches_edge(m)]
            assert len(whole) == 2, (o, {y: int(m.sum()) for y, m in tiles.items()})


# --- templates, text prior and the data card ---------------------------------------------


def test_query_templates_recover_each_kinds_template(v2_set):
    for s in load_split(v2_set, "train", check_images=False):
        assert query_template(s.query) == KINDS[s.kind].template, s
    assert query_template("What is the man doing?") == "what is the man doing?"  # QuIC-360: itself


def test_data_card_lists_every_kind_with_its_share_and_chance(v2_set):
    card = (v2_set / "README.md").read_text()
    train = list(load_split(v2_set, "train", check_images=False))
    prior = TextPrior.fit((s.query, s.answer) for s in train)
    for kind, info in KINDS.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {kind} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        items = [s for s in train if s.kind == kind]
        chance = sum(matches(prior.predict(s.query), list(s.references)) for s in items) / len(items)
        assert float(cells[4]) == pytest.approx(chance, abs=5e-4), kind
        assert 0.08 < float(cells[1]) < 0.17 and info.tests in row
    # chance is the majority per template: presence and overlap-count near 1/2, colours near 1/6
    rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| ")}
    assert float(rows["presence"].split("|")[5]) >= 0.5
    assert float(rows["high"].split("|")[5]) < 0.35


# --- the data card in docs/ and `cora-kit data card` --------------------------------------

DOCS_CARD = Path(__file__).resolve().parents[1] / "docs" / "synthetic-data.md"


def _md_rows(text: str, header: str) -> list[list[str]]:
    """The body rows (cells stripped) of the markdown table whose header line is ``header``."""
    lines = text.splitlines()
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_docs_card_lists_every_kind_with_its_template():
    rows = _md_rows(DOCS_CARD.read_text(encoding="utf-8"), "| kind | template | answers | what it tests |")
    assert [r[0] for r in rows] == list(KINDS)
    for row in rows:
        assert re.match(r"`([^`]*)`", row[1]).group(1) == KINDS[row[0]].template, row


def test_docs_chance_table_is_that_of_the_set_it_names():
    """The numbers in docs/synthetic-data.md are what ``cora-kit data card`` computes for the
    split sizes and seed the text names (sizes and seed, not image size, decide the queries)."""
    from cora_kit.data.card import chance_table
    from cora_kit.data.synth import synth_queries

    text = DOCS_CARD.read_text(encoding="utf-8")
    m = re.search(r"([\d,]+) train,\s+([\d,]+) val and ([\d,]+) test images, seed (\d+)", text)
    n_train, n_val, n_test, seed = (int(g.replace(",", "")) for g in m.groups())
    table = chance_table(synth_queries(SynthParams(n_train, n_val, n_test, 64, 128, seed=seed)))
    assert table in text


def test_data_card_command_agrees_with_the_generated_readme(v2_set, capsys):
    from cora_kit.cli import main

    p = read_metadata(v2_set)["params"]
    sets = [f"data.synth.{k}={p[k]}" for k in ("n_train", "n_val", "n_test", "height", "width", "seed")]
    assert main(["data", "card", *(a for s in sets for a in ("--set", s))]) == 0
    printed = _md_rows(capsys.readouterr().out, "| kind | share | chance (train) | chance (test) |")
    card = (v2_set / "README.md").read_text()
    readme = {r[0]: r for r in _md_rows(card, "| kind | share | template | answers | chance (train) | chance (test)"
                                              " | what it tests |")}
    assert [r[0] for r in printed] == [*KINDS, "**all**"]
    for kind, share, train, test in printed:
        assert [share, train, test] == [readme[kind][1], readme[kind][4], readme[kind][5]], kind
    assert main(["data", "card", "--set", "data.synth.version=1"]) == 2
    assert "v1 has no query kinds" in capsys.readouterr().err
