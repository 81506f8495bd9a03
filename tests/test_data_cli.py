"""``cora-kit data synth|check|show`` through the real console entry point."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import cora_kit
from cora_kit.cli import main

SYNTH = ["data", "synth", "--n-train", "3", "--n-val", "1", "--n-test", "1", "--size", "32x64"]


def test_synth_generates_then_reuses_then_refuses_other_params(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main([*SYNTH, "--out", str(out)]) == 0
    assert "generated" in capsys.readouterr().out
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["params"]["height"] == 32 and meta["splits"]["train"]["images"] == 3
    png = (out / "images" / "train_000000.png").read_bytes()
    assert main([*SYNTH, "--out", str(out)]) == 0
    assert "reused" in capsys.readouterr().out
    assert main([*SYNTH, "--out", str(out), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "differs in: seed" in err and "--force" in err and "Traceback" not in err
    assert (out / "images" / "train_000000.png").read_bytes() == png  # untouched
    assert main([*SYNTH, "--out", str(out), "--seed", "1", "--force"]) == 0
    assert json.loads((out / "metadata.json").read_text())["params"]["seed"] == 1


def test_synth_rejects_non_2_1_size(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--size", "64x64"]) == 2
    assert "2:1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_check_reports_skips(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main([*SYNTH, "--out", str(out)]) == 0
    capsys.readouterr()
    text = (out / "train.csv").read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*text, "images/nope.png,q,a,where", text[1]]) + "\n")
    assert main(["data", "check", str(bad), "--image-root", str(out)]) == 2
    assert f"row {len(text) + 1}: image not found" in capsys.readouterr().err
    assert main(["data", "check", str(bad), "--image-root", str(out), "--on-bad-row", "skip"]) == 0
    got = capsys.readouterr().out
    assert "skipped 2 rows: 1 duplicate row, 1 missing image" in got and "12 items" in got  # 3 images x 4


def test_show_renders_an_item(tmp_path, capsys):
    if "e2p" not in {p.name for p in cora_kit.list_plugins("tiler")}:
        pytest.skip("e2p tiler not registered yet")
    out = tmp_path / "synth"
    assert main([*SYNTH, "--out", str(out)]) == 0
    png = tmp_path / "item.png"
    assert main(["data", "show", str(out), "--index", "3", "--split", "train", "--out", str(png), "--view-size", "32"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(png) as img:
        assert img.size[0] > 400 and img.size[1] > 400
    assert main(["data", "show", str(out), "--index", "99", "--out", str(png)]) == 2
    assert "out of range (12 samples)" in capsys.readouterr().err
