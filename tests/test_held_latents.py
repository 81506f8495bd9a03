"""A resampler that does not train in stages 2-3 runs once per image (``HeldLatents``),
and training on the kept latents takes the same steps as running it every step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cora_kit.config import resolve_config
from cora_kit.data.synth import SynthParams, generate_synthetic
from cora_kit.pipeline import CoraModel
from cora_kit.train.engine import run
from cora_kit.train.held_latents import HeldLatents
from cora_kit.train.stages import FeatureProvider


@pytest.fixture(scope="module")
def model() -> CoraModel:
    return CoraModel.from_config(resolve_config("tiny", overrides=["device=cpu"]))


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = generate_synthetic(tmp_path_factory.mktemp("held") / "synth", SynthParams(n_train=3, n_val=1, n_test=1, height=64, width=128))
    images = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
    assert len(images) >= 3
    return [{"image_path": str(p)} for p in images[:3]]


def _holding(model: CoraModel, stage: int, resampler_scale: float) -> None:
    cfg = getattr(model.config.stages, f"stage{stage}").model_copy(update={"resampler_lr_scale": resampler_scale, "projector_lr_scale": 1.0})
    model.set_stage(stage)
    model.param_groups(stage, cfg)
    model.train()


def test_a_held_resampler_runs_in_eval_mode_until_the_next_set_stage(model: CoraModel) -> None:
    _holding(model, 2, 0.0)
    assert not model.resampler.training and model.projector.training
    assert not any(p.requires_grad for p in model.resampler.parameters())
    _holding(model, 2, 0.5)
    assert model.resampler.training
    assert all(p.requires_grad for p in model.resampler.parameters())


def test_latents_are_the_resamplers_output_made_once_per_image(model: CoraModel, items: list[dict], tmp_path: Path) -> None:
    _holding(model, 2, 0.0)
    provider = FeatureProvider(model, 2, str(tmp_path), torch.device("cpu"), 4)
    held, why = HeldLatents.for_stage(model, 2, provider, items + items, torch.no_grad)
    assert held is not None and "3 images" in why
    batch = [items[2], items[0], items[2]]
    got = held.latents(batch)
    with torch.no_grad():
        want = model.resample(provider.features(batch))
    torch.testing.assert_close(got, want)
    assert got.shape == want.shape and want.dim() == 4
    held.latents(items)
    assert held.passes == 3  # the sizing pass made items[0]; every image once


def test_no_kept_latents_when_the_resampler_trains_or_they_do_not_fit(model: CoraModel, items: list[dict], tmp_path: Path) -> None:
    provider = FeatureProvider(model, 2, str(tmp_path), torch.device("cpu"), 4)
    _holding(model, 2, 0.5)
    held, why = HeldLatents.for_stage(model, 2, provider, items, torch.no_grad)
    assert held is None and "trains" in why
    _holding(model, 2, 0.0)
    held, why = HeldLatents.for_stage(model, 2, provider, items, torch.no_grad, budget_bytes=1024)
    assert held is None and "MiB" in why and "3 images" in why


def _stage2_losses(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[float], str]:
    sets = [f"data.synth_dir={tmp_path / 'synth'}", "data.synth.n_train=6", "data.synth.n_val=2", "data.synth.n_test=2",
            "stages.stage1.max_steps=1", "stages.stage2.max_steps=6", "stages.stage2.batch_size=4",
            "stages.stage2.log_every=1", "device=cpu"]
    run(resolve_config("tiny", None, sets), tmp_path / name, stages=[1, 2], model_factory=CoraModel.from_config,
        progress=True, plain_progress=True, evaluate=False, feature_cache_dir=tmp_path / f"cache-{name}")
    said = capsys.readouterr()
    rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("stage") == 2 and "loss" in r], said.out + said.err


def test_training_on_kept_latents_takes_the_same_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    kept, said = _stage2_losses(tmp_path, "kept", capsys)
    assert "stage 2: resampler latents: each image's latent made once" in said
    monkeypatch.setattr(HeldLatents, "for_stage", classmethod(lambda cls, *a, **k: (None, "off (test)")))
    per_step, said = _stage2_losses(tmp_path, "per-step", capsys)
    assert "off (test)" in said
    assert len(kept) == len(per_step) == 6
    assert kept == pytest.approx(per_step, rel=1e-5)
