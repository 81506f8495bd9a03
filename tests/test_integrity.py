"""Verified weights and safe model folders (issue 18, cases 2 and 3).

Every weight file cora-kit writes is listed with its sha256 in a manifest and checked on
every load: resume (checkpoints and earlier stages' final weights), ``caption --run``,
``export --run`` and ``caption --model``. An exported folder is covered by its hashes
(config included), never grants itself ``trust_remote_code`` and loads nothing from
outside itself."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_train_fake import fake_factory, make_splits, tiny_config

from cora_kit import serving
from cora_kit.cli import main
from cora_kit.errors import CheckpointError, ConfigError
from cora_kit.train import checkpoint as ckpt
from cora_kit.train.engine import run


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != "export.json")


def flip64(path: Path) -> None:
    """XOR 64 bytes near the end of ``path`` (tensor data, past any header)."""
    data = bytearray(path.read_bytes())
    start = max(len(data) - 200, 0)
    for i in range(start, min(start + 64, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _run(tmp: Path, name: str = "r", **kw):
    kw.setdefault("splits", make_splits())
    kw.setdefault("feature_cache_dir", tmp / "cache")
    kw.setdefault("model_factory", fake_factory)
    kw.setdefault("evaluate", False)
    return run(kw.pop("config", tiny_config()), tmp / name, progress=False, **kw)


def _interrupted(tmp: Path, stage: int, step: int) -> Path:
    """A run stopped by Ctrl-C at (stage, step): its stage folder holds one checkpoint."""
    def stop(s: int, k: int, metrics: dict) -> None:
        if (s, k) == (stage, step):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp, on_step=stop)
    return tmp / "r" / f"stage{stage}"


# --- case 2: corrupted weights are refused, naming the file ------------------------------


@pytest.mark.parametrize("name", ["weights.safetensors", "state.pt"])
def test_resume_refuses_a_corrupted_checkpoint_file(tmp_path: Path, name: str) -> None:
    stage_dir = _interrupted(tmp_path, 1, 3)
    ref = ckpt.find_checkpoint(stage_dir)
    assert ref is not None and ref.step == 3  # Ctrl-C saves the step it stopped at
    bad = ref.path / name
    flip64(bad)
    with pytest.raises(CheckpointError, match=str(bad)) as err:
        _run(tmp_path, resume=True)
    assert "sha256" in str(err.value)


def test_resume_refuses_corrupted_earlier_stage_weights(tmp_path: Path) -> None:
    _interrupted(tmp_path, 2, 1)
    final = tmp_path / "r" / "stage1" / "model.safetensors"
    flip64(final)
    with pytest.raises(CheckpointError, match=str(final)):
        _run(tmp_path, resume=True)


def test_checkpoints_carry_a_manifest_of_sha256(tmp_path: Path) -> None:
    stage_dir = _interrupted(tmp_path, 1, 5)
    ref = ckpt.find_checkpoint(stage_dir)
    manifest = json.loads((ref.path / ckpt.MANIFEST).read_text())
    assert manifest["step"] == ref.step
    for name, entry in manifest["files"].items():
        assert sha256_file(ref.path / name) == entry["sha256"]
        assert (ref.path / name).stat().st_size == entry["bytes"]
    _run(tmp_path, resume=True)
    done = json.loads((stage_dir / ckpt.DONE).read_text())
    assert done["files"][ckpt.WEIGHTS_FINAL]["sha256"] == sha256_file(stage_dir / ckpt.WEIGHTS_FINAL)
    assert ckpt.find_checkpoint(stage_dir) is None  # a finished stage keeps its final weights only


def test_legacy_checkpoint_layout_still_resumes_with_a_warning(tmp_path: Path) -> None:
    """A stage folder of cora-kit 0.1.0 (last.safetensors + last.state.pt, no hashes)."""
    _run(tmp_path, "full")
    stage_dir = _interrupted(tmp_path, 1, 3)
    weights, state = ckpt.load_checkpoint(stage_dir)
    for d in stage_dir.glob("checkpoint-*"):
        shutil.rmtree(d)
    ckpt.save_weights(stage_dir / ckpt.LEGACY_WEIGHTS, weights, {"step": str(state["step"])})
    ckpt.save_resume_state(stage_dir / ckpt.LEGACY_STATE, state)
    with pytest.warns(RuntimeWarning, match="without sha256"):
        _run(tmp_path, resume=True)
    a = ckpt.load_final(tmp_path / "full" / "stage3")
    b = ckpt.load_final(tmp_path / "r" / "stage3")
    assert all((a[k] == b[k]).all() for k in a)
    assert not (stage_dir / ckpt.LEGACY_WEIGHTS).exists()


@pytest.mark.parametrize("stage", [1, 3])
@pytest.mark.parametrize("command", ["caption", "export"])
def test_caption_and_export_refuse_corrupted_stage_weights(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: int, command: str
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    bad = copy / f"stage{stage}" / "model.safetensors"
    flip64(bad)
    pano = sorted((tiny_run.parent.parent / "synth" / "images").glob("*.png"))[0]
    argv = (["caption", str(pano), "--run", str(copy)] if command == "caption"
            else ["export", "--run", str(copy), "--out", str(tmp_path / "out")])
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(bad) in err and "sha256" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- case 3: an exported folder cannot run code or reach outside itself -------------------


def _copy(exported: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    return folder


def _rehash(folder: Path) -> None:
    """Rewrite export.json's hashes: a tampered folder that is consistent with itself."""
    meta = json.loads((folder / "export.json").read_text())
    meta["files"] = {f: sha256_file(folder / f) for f in folder_files(folder)}
    (folder / "export.json").write_text(json.dumps(meta))


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _pano(tiny_run: Path) -> Path:
    return sorted((tiny_run.parent.parent / "synth" / "images").glob("*.png"))[0]


def test_export_hashes_every_file_config_included(exported: Path) -> None:
    meta = json.loads((exported / "export.json").read_text())
    assert meta["format_version"] == 2
    assert set(meta["files"]) == set(folder_files(exported))
    assert {"config.yaml", "plugins.json", "llm/config.json", "llm/tokenizer.json"} <= set(meta["files"])


def test_edited_config_is_refused_naming_it(exported: Path, tmp_path: Path, tiny_run: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(exported, tmp_path)
    _edit_config(folder, lambda d: d["model"]["llm"].update(trust_remote_code=True))
    assert main(["caption", str(_pano(tiny_run)), "--model", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert str(folder / "config.yaml") in err and "sha256" in err


def test_unlisted_file_is_refused_naming_it(exported: Path, tmp_path: Path) -> None:
    folder = _copy(exported, tmp_path)
    (folder / "llm" / "extra.py").write_text("print('hi')\n")
    with pytest.raises(CheckpointError, match=r"llm/extra.py: not listed in export.json"):
        serving.load_export(folder, device="cpu")


def test_format_v1_export_asks_for_a_re_export(exported: Path, tmp_path: Path) -> None:
    folder = _copy(exported, tmp_path)
    meta = json.loads((folder / "export.json").read_text())
    meta["format_version"] = 1
    (folder / "export.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="re-export"):
        serving.load_export(folder, device="cpu")


def _plant_remote_code(folder: Path, marker: Path) -> None:
    """The attack of issue 18: trust_remote_code in config.yaml + an auto_map module in
    llm/config.json, with export.json re-hashed to match."""
    (folder / "llm" / "evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import Qwen3ForCausalLM\n\n\n"
        "class EvilForCausalLM(Qwen3ForCausalLM):\n    pass\n"
    )
    cfg_path = folder / "llm" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM"}
    cfg_path.write_text(json.dumps(cfg))
    _edit_config(folder, lambda d: d["model"]["llm"].update(trust_remote_code=True))
    _rehash(folder)


def test_folder_config_never_enables_remote_code(exported: Path, tmp_path: Path, tiny_run: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = _copy(exported, tmp_path)
    marker = tmp_path / "code-ran"
    _plant_remote_code(folder, marker)
    assert main(["caption", str(_pano(tiny_run)), "--model", str(folder), "--max-new-tokens", "2"]) == 0
    assert not marker.exists(), "a module of the model folder ran"
    err = " ".join(capsys.readouterr().err.split())
    assert "trust_remote_code is true; ignored" in err


def test_trust_remote_code_only_from_the_command_line_with_a_warning(
    exported: Path, tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    folder = _copy(exported, tmp_path)
    marker = tmp_path / "code-ran"
    _plant_remote_code(folder, marker)
    assert main(["caption", str(_pano(tiny_run)), "--model", str(folder), "--max-new-tokens", "2",
                 "--trust-remote-code"]) == 0
    assert marker.exists()  # the user asked for it: the flag is honoured
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: --trust-remote-code" in err


@pytest.mark.parametrize("key,value", [
    (("llm", "pretrained"), "../outside"),
    (("llm", "pretrained"), "/etc"),
    (("encoder", "pretrained"), "encoder/../../outside"),
    (("llm", "tokenizer"), "../outside"),
])
def test_pretrained_paths_must_stay_inside_the_folder(
    exported: Path, tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str],
    key: tuple[str, str], value: str,
) -> None:
    folder = _copy(exported, tmp_path)
    outside = tmp_path / "outside"
    shutil.copytree(folder / "llm", outside)
    import torch

    torch.save({"x": torch.zeros(1)}, outside / "pytorch_model.bin")  # a pickle outside the folder
    _edit_config(folder, lambda d: d["model"][key[0]].update({key[1]: value}))
    _rehash(folder)
    with pytest.raises(ConfigError, match="points outside the model folder"):
        serving.load_export(folder, device="cpu")
    assert main(["caption", str(_pano(tiny_run)), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "points outside the model folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_run_config_never_enables_remote_code(tiny_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    _edit_config(copy, lambda d: d["model"]["llm"].update(trust_remote_code=True))
    model, info = serving.load_run(copy, device="cpu")
    assert model.config.model.llm.trust_remote_code is False
    assert any("trust_remote_code is true; ignored" in n for n in info.notes)
