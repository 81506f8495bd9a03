"""``cora_kit.Captioner`` and ``cora-kit caption --queries`` on a real tiny run.

Peers: the training engine's own test-split predictions (``predictions.jsonl``), and the
same Captioner one image at a time (batching must not change a caption)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import cora_kit
from cora_kit.cli import main
from cora_kit.data.images import read_erp
from cora_kit.errors import ConfigError, DataError
from cora_kit.serving import CaptionResult, Captioner


@pytest.fixture(scope="module")
def cap(tiny_trained_run: Path) -> Captioner:
    return Captioner.from_run(tiny_trained_run, device="cpu")


def _test_images(run: Path) -> list[Path]:
    return sorted((run.parent.parent / "synth" / "images").glob("test_*.png"))


def test_public_name_and_structured_results(cap: Captioner, tiny_trained_run: Path) -> None:
    assert cora_kit.Captioner is Captioner
    files = _test_images(tiny_trained_run)[:3]
    results = cap.caption(files, "what is above the horizon?")
    assert [type(r) for r in results] == [CaptionResult] * 3
    assert [r.image for r in results] == [str(f) for f in files]
    assert all(r.query == "what is above the horizon?" and isinstance(r.caption, str) for r in results)
    assert all(r.seconds > 0 for r in results)
    assert set(results[0].to_dict()) == {"caption", "query", "seconds", "image"}
    info = cap.describe()
    assert info["kind"] == "run" and info["device"] == "cpu" and info["precision"] == "fp32"


def test_reproduces_the_engines_predictions(cap: Captioner, tiny_trained_run: Path) -> None:
    from cora_kit.train.data import load_splits

    items = list(load_splits(cap.model.config).test)
    want = {json.loads(x)["id"]: json.loads(x)["prediction"]
            for x in (tiny_trained_run / "predictions.jsonl").read_text().splitlines()}
    got = cap.caption([Path(i["image_path"]) for i in items], [i["query"] for i in items])
    assert {i["id"]: r.caption for i, r in zip(items, got, strict=True)} == want


def test_batching_does_not_change_captions(cap: Captioner, tiny_trained_run: Path) -> None:
    """One batch of mixed sizes and queries == each image alone (the encoder runs batched)."""
    files = _test_images(tiny_trained_run)[:3]
    big = read_erp(files[0], size=(128, 256))  # another size in the same batch
    images: list = [*files, big]
    queries = ["what is above the horizon?", "where is the red cube?", "describe the scene", "what is left?"]
    together = cap.caption(images, queries, batch_size=4)
    alone = [cap.caption([im], [q])[0] for im, q in zip(images, queries, strict=True)]
    assert [r.caption for r in together] == [r.caption for r in alone]
    assert [r.query for r in together] == queries
    assert together[-1].image is None  # a tensor input


def test_uint8_and_float_tensors_give_the_same_caption(cap: Captioner, tiny_trained_run: Path) -> None:
    f = _test_images(tiny_trained_run)[0]
    as_uint8 = read_erp(f, dtype=torch.uint8)
    a, b = cap.caption([read_erp(f), as_uint8], "what is above the horizon?")
    assert a.caption == b.caption


def test_bad_input_fails_before_model_work(cap: Captioner, tiny_trained_run: Path, tmp_path: Path) -> None:
    files = _test_images(tiny_trained_run)[:2]
    with pytest.raises(ConfigError, match="2 panoramas but 1 queries"):
        cap.caption(files, ["only one"])
    with pytest.raises(ConfigError, match="query 2 is empty"):
        cap.caption(files, ["fine", "  "])
    square = tmp_path / "square.png"
    Image.new("RGB", (64, 64)).save(square)
    with pytest.raises(DataError, match="square.png: 64x64 is not an equirectangular"):
        cap.caption([files[0], square], "q")
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        cap.caption([torch.zeros(1, 8, 16)], "q")


def test_bf16_autocast_runs_and_is_reported(tiny_trained_run: Path) -> None:
    """The CUDA path's autocast, exercised on CPU (``precision="bf16"`` forces it)."""
    cap = Captioner.from_run(tiny_trained_run, device="cpu", precision="bf16")
    assert cap.autocast_dtype == torch.bfloat16 and cap.describe()["precision"] == "bf16"
    (r,) = cap.caption(_test_images(tiny_trained_run)[:1], "what is above the horizon?")
    assert isinstance(r.caption, str)
    with pytest.raises(ConfigError, match="precision"):
        Captioner.from_run(tiny_trained_run, device="cpu", precision="fp16")


def test_from_export_matches_from_run(cap: Captioner, tiny_trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    assert main(["export", "--run", str(tiny_trained_run), "--out", str(out)]) == 0
    exported = Captioner.from_export(out, device="cpu")
    files = _test_images(tiny_trained_run)
    query = "what is above the horizon?"
    assert [r.caption for r in exported.caption(files, query)] == [r.caption for r in cap.caption(files, query)]
    assert exported.describe()["kind"] == "export"


def test_cli_queries_csv(tiny_trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _test_images(tiny_trained_run)[:2]
    for f in files:
        (tmp_path / f.name).write_bytes(f.read_bytes())
    csv = tmp_path / "questions.csv"
    csv.write_text(f"image,query\n{files[0].name},where is the red cube?\n{files[1].name},what is above the horizon?\n"
                   f"{files[0].name},what is below the horizon?\n")
    out = tmp_path / "out.jsonl"
    assert main(["caption", "--queries", str(csv), "--run", str(tiny_trained_run), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["query"] for r in rows] == ["where is the red cube?", "what is above the horizon?",
                                         "what is below the horizon?"]
    assert [Path(r["image"]).name for r in rows] == [files[0].name, files[1].name, files[0].name]
    cap = Captioner.from_run(tiny_trained_run, device="cpu")
    assert [r["caption"] for r in rows] == [
        r.caption for r in cap.caption([tmp_path / r["image"] for r in rows], [r["query"] for r in rows])]
    assert "where is the red cube?" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [("image,question\na.png,q\n", "missing column(s) query"),
     ("image,query\n{img},\n", "row 2: empty query"),
     ("image,query\n{img},q\nnope.png,q\n", "row 3:"),
     ],
)
def test_cli_queries_csv_errors_name_the_row(
    tiny_trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    img = _test_images(tiny_trained_run)[0]
    csv = tmp_path / "q.csv"
    csv.write_text(text.format(img=img))
    assert main(["caption", "--queries", str(csv), "--run", str(tiny_trained_run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "q.csv" in err and message in err and "Traceback" not in err


def test_cli_queries_excludes_positional_images(tiny_trained_run: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("image,query\n")
    img = _test_images(tiny_trained_run)[0]
    assert main(["caption", str(img), "--queries", str(csv), "--run", str(tiny_trained_run)]) == 2
    assert "--queries" in capsys.readouterr().err
