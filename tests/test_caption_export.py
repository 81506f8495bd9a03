"""``cora-kit caption`` and ``cora-kit export`` on a real tiny run (a few steps per stage;
the ``tiny_run`` and ``exported`` fixtures live in conftest.py).

Peers: the training engine's own test-split predictions (``predictions.jsonl``) for the
run loader, and the LoRA-wrapped LLM for the merged export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from cora_kit import serving
from cora_kit.cli import main
from cora_kit.config import read_config_file
from cora_kit.data.images import read_erp
from cora_kit.errors import CheckpointError
from cora_kit.serving import export_format
from cora_kit.pipeline import CoraModel
from cora_kit.train.data import load_splits


def _images(run_dir: Path) -> Path:
    return run_dir.parent.parent / "synth" / "images"


def _vision_embeds(model: CoraModel, files: list[Path], query: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused LLM inputs ``[B,L,D]`` + mask for ``files`` through the whole vision path."""
    erps = [serving.read_panorama(f) for f in files]
    hidden = torch.cat([model.encode_frozen(model.tile(e[None]), 3) for e in erps])
    latent = model.resample(model.encode_trainable(hidden, 3))
    fused = model.fusion(model.projector(latent).tokens, [query] * len(files), model.llm.embed_tokens)
    return fused.inputs_embeds, fused.attention_mask


def test_seeded_rebuild_reproduces_frozen_weights(tiny_run: Path) -> None:
    """The run stores trainable weights only: rebuilding from config.yaml must give the
    same frozen weights whatever the global RNG state is."""
    config = read_config_file(tiny_run / "config.yaml")
    torch.manual_seed(1)
    a = CoraModel.from_config(config).state_dict()
    torch.manual_seed(12345)
    torch.rand(1000)
    b = CoraModel.from_config(config).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_loader_reproduces_the_engines_predictions(tiny_run: Path) -> None:
    """Captions of the test split through ``load_run`` equal what the engine wrote."""
    model, info = serving.load_run(tiny_run, device="cpu")
    assert sorted(info.stages) == [1, 2, 3] and not info.notes
    config = model.config
    items = list(load_splits(config).test)
    want = {json.loads(line)["id"]: json.loads(line)["prediction"]
            for line in (tiny_run / "predictions.jsonl").read_text().splitlines()}
    # uint8 panoramas: the tiling path the engine took (decoded in its DataLoader, OpenCV)
    erps = [read_erp(i["image_path"], dtype=torch.uint8) for i in items]
    got = serving.caption_erps(model, erps, [i["query"] for i in items],
                               config.eval.max_new_tokens, config.eval.num_beams)
    assert dict(zip([i["id"] for i in items], got, strict=True)) == want
    files = [Path(i["image_path"]) for i in items]
    by_file = {r["image"]: r["caption"] for r in serving.caption_files(model, files, items[0]["query"])}
    assert all(by_file[i["image_path"]] == want[i["id"]] for i in items if i["query"] == items[0]["query"])
    # the training run cached Stage-3 encoder features under a key that fingerprints every
    # encoder weight: the rebuilt encoder (seeded init + Stage-1 blocks) has the same key
    cache_keys = [json.loads(p.read_text())["key"] for p in (tiny_run.parent / ".feature-cache").glob("*/key.json")]
    assert any(k.startswith(model.encoder_cache_key(3)) for k in cache_keys)


def test_export_folder_is_self_contained(exported: Path) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {"config.yaml", "plugins.json", "export.json", "encoder", "llm", "resampler.safetensors",
            "projector.safetensors", "overlap_head.safetensors"} <= names
    assert not export_format.find_pickles(exported)
    config = read_config_file(exported / "config.yaml")
    assert config.model.llm.pretrained == "llm" and config.model.encoder.pretrained == "encoder"
    assert config.model.llm.arch == {} and config.model.llm.tokenizer is None
    assert (exported / "llm" / "tokenizer.json").is_file()
    assert json.loads((exported / "plugins.json").read_text())["resampler"]["name"] == "bimamba"
    # the folder loads from anywhere: paths resolve inside it, not against the cwd
    moved = exported.parent / "moved"
    shutil.copytree(exported, moved)
    model, _ = serving.load_export(moved, device="cpu")
    assert str(moved.resolve()) in model.config.model.llm.pretrained


def test_merged_llm_matches_lora_wrapped(tiny_run: Path, exported: Path) -> None:
    lora_model, _ = serving.load_run(tiny_run, device="cpu")
    assert not lora_model.llm.lora_is_zero()
    merged_model, _ = serving.load_export(exported, device="cpu")
    files = sorted(_images(tiny_run).glob("test_*.png"))[:2]
    query = "where is the red cube?"
    with torch.no_grad():
        emb_a, mask = _vision_embeds(lora_model, files, query)
        emb_b, mask_b = _vision_embeds(merged_model, files, query)
        torch.testing.assert_close(emb_b, emb_a, rtol=0, atol=1e-6)  # encoder, resampler, projector
        assert torch.equal(mask, mask_b)
        logits_lora = lora_model.llm(emb_a, mask).logits
        logits_merged = merged_model.llm(emb_a, mask).logits
        with lora_model.llm.model.disable_adapter():
            logits_base = lora_model.llm(emb_a, mask).logits
    torch.testing.assert_close(logits_merged, logits_lora, rtol=1e-4, atol=1e-4)
    assert (logits_base - logits_lora).abs().max() > 1e-2  # the adapters do change the LM
    # greedy tokens of a forced length (the tiny model may end at once otherwise)
    kw = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    ids_lora = lora_model.llm.model.generate(inputs_embeds=emb_a, attention_mask=mask, **kw)
    ids_merged = merged_model.llm.model.generate(inputs_embeds=emb_a, attention_mask=mask, **kw)
    assert torch.equal(ids_lora, ids_merged)


def test_caption_run_then_model_gives_identical_captions(
    tiny_run: Path, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = _images(tiny_run)
    one = sorted(images.glob("*.png"))[0]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    common = ["--max-new-tokens", "5", "--query", "what is above the horizon?"]
    assert main(["caption", str(one), str(images), "--run", str(tiny_run), "--out", str(a), *common]) == 0
    assert main(["caption", str(one), str(images), "--model", str(exported), "--out", str(b), *common]) == 0
    rows_a = [json.loads(x) for x in a.read_text().splitlines()]
    rows_b = [json.loads(x) for x in b.read_text().splitlines()]
    expected = [str(one)] + [str(p) for p in sorted(images.glob("*.png"))]
    assert [r["image"] for r in rows_a] == expected
    assert all(r.pop("seconds") > 0 for r in rows_a + rows_b)  # per-caption share of its batch's time
    assert rows_a == rows_b
    assert all(r["query"] == "what is above the horizon?" for r in rows_a)
    assert "caption" in capsys.readouterr().out


def test_export_refuses_pickle_files(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "with-pickle"
    shutil.copytree(exported, bad)
    torch.save({"x": torch.zeros(2)}, bad / "llm" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        serving.load_export(bad)
    pano = sorted((exported.parent / "synth" / "images").glob("*.png"))[0]
    assert main(["caption", str(pano), "--model", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "pytorch_model.bin" in err and "safetensors only" in err


def test_export_detects_modified_weights(exported: Path, tmp_path: Path) -> None:
    bad = tmp_path / "modified"
    shutil.copytree(exported, bad)
    path = bad / "projector.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="projector.safetensors"):
        serving.load_export(bad)


def test_export_refuses_non_empty_out(tiny_run: Path, exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--run", str(tiny_run), "--out", str(exported)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "not-2to1", "unreadable", "empty-folder"])
def test_bad_panoramas_exit_2_naming_the_file(
    case: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pano.jpg"
    if case == "not-2to1":
        Image.new("RGB", (30, 20)).save(path)
    elif case == "unreadable":
        path.write_text("not an image")
    elif case == "empty-folder":
        path = tmp_path / "empty"
        path.mkdir()
    assert main(["caption", str(path), "--run", str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_and_model_flags(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pano = sorted(_images(tiny_run).glob("*.png"))[0]
    assert main(["caption", str(pano)]) == 2
    assert "exactly one of --run" in capsys.readouterr().err
    only1 = tmp_path / "only-stage1"
    only1.mkdir()
    shutil.copy(tiny_run / "config.yaml", only1 / "config.yaml")
    shutil.copytree(tiny_run / "stage1", only1 / "stage1")
    assert main(["caption", str(pano), "--run", str(only1)]) == 2
    assert "only stage 1 has weights" in capsys.readouterr().err
    no3 = tmp_path / "stage3-only"
    no3.mkdir()
    shutil.copy(tiny_run / "config.yaml", no3 / "config.yaml")
    shutil.copytree(tiny_run / "stage3", no3 / "stage3")
    with pytest.raises(CheckpointError, match="--from"):
        serving.load_run(no3, device="cpu")
    model, info = serving.load_run(no3, device="cpu", sources=[tiny_run])
    assert info.stages[1].startswith(str(tiny_run))


def test_run_records_weights_fingerprint_and_rebuild_checks_it(tiny_run: Path, tmp_path: Path) -> None:
    from cora_kit.errors import CheckpointError

    recorded = (tiny_run / "weights_fingerprint.txt").read_text().strip()
    assert recorded
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    serving.load_run(copy, device="cpu")  # same config -> same initial weights
    (copy / "weights_fingerprint.txt").write_text("0" * 32 + "-1\n")
    with pytest.raises(CheckpointError, match="other initial weights"):
        serving.load_run(copy, device="cpu")


def test_export_bf16_halves_the_weights_and_loads_as_rounded_fp32(
    tiny_run: Path, exported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out16 = tiny_run.parent.parent / "exported-bf16"
    assert main(["export", "--run", str(tiny_run), "--out", str(out16), "--dtype", "bf16"]) == 0
    assert "bf16" in capsys.readouterr().out
    assert json.loads((out16 / "export.json").read_text())["dtype"] == "bf16"
    size32, size16 = export_format.summarize(exported), export_format.summarize(out16)
    assert size16.keys() == size32.keys()
    for name in size32:  # every weight file about half (headers are the same size)
        assert size16[name] < 0.55 * size32[name] + 4096, name
    m32, _ = serving.load_export(exported, device="cpu")
    m16, info = serving.load_export(out16, device="cpu")
    assert any("bf16" in n for n in info.notes)
    p32, p16 = dict(m32.named_parameters()), dict(m16.named_parameters())
    assert p16.keys() == p32.keys()
    for name, p in p16.items():
        assert p.dtype == torch.float32, name
        if "lora_" in name:  # a fresh, inactive adapter (the export's LoRA is merged)
            continue
        assert torch.equal(p, p32[name].to(torch.bfloat16).float()), name
    assert main(["export", "--run", str(tiny_run), "--out", str(out16) + "-x", "--dtype", "fp16"]) == 2


def _lm_head_input_dtypes(model: CoraModel) -> tuple[list[torch.dtype], object]:
    seen: list[torch.dtype] = []
    head = model.llm.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen, handle


def test_caption_and_eval_run_under_bf16_autocast_when_asked(tiny_run: Path) -> None:
    """CUDA runs these under bf16 autocast (precision auto); on this CPU the same code
    path runs with precision bf16, and fp32 stays the CPU default."""
    from types import SimpleNamespace

    from cora_kit.train import report

    model, _ = serving.load_run(tiny_run, device="cpu")
    files = sorted(_images(tiny_run).glob("test_*.png"))[:2]
    seen, handle = _lm_head_input_dtypes(model)
    try:
        rows16 = serving.caption_files(model, files, "what is above the horizon?", 3, precision="bf16")
        assert seen and set(seen) == {torch.bfloat16}
        seen.clear()
        rows32 = serving.caption_files(model, files, "what is above the horizon?", 3)  # auto on CPU: fp32
        assert seen and set(seen) == {torch.float32}
        assert len(rows16) == len(rows32) == 2
        seen.clear()
        config = model.config.model_copy(update={"precision": "bf16"})
        from cora_kit.train.distributed import DistInfo

        ctx = SimpleNamespace(config=config, cache_dir=tiny_run.parent / ".feature-cache",
                              device=torch.device("cpu"), cache_stats={}, dist=DistInfo())
        items = list(load_splits(config).test)[:2]
        preds = report.predict(model, items, ctx, "panorama")
        assert set(preds) == {i["id"] for i in items} and set(seen) == {torch.bfloat16}
    finally:
        handle.remove()
    with pytest.raises(Exception, match="precision"):
        serving.caption_files(model, files, "q", 3, precision="fp8")
