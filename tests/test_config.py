"""Config precedence (defaults < preset < file < CLI) and errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cora_kit.config import CoraConfig, available_presets, resolve_config, to_yaml
from cora_kit.errors import ConfigError


def test_defaults_are_the_seed_design():
    c = CoraConfig()
    assert c.model.latent_dim == 1024
    assert c.model.encoder.pretrained == "google/siglip2-so400m-patch16-256"
    assert c.model.encoder.num_trainable_blocks == 2
    assert c.model.llm.pretrained == "Qwen/Qwen3-0.6B"
    assert (c.model.llm.lora.r, c.model.llm.lora.alpha, c.model.llm.lora.dropout) == (32, 64, 0.1)
    assert len(c.model.llm.lora.target_modules) == 7
    assert c.stages.stage2.lr == 1e-4 and c.stages.stage2.grad_accum == 8
    assert c.stages.stage2.overlap_weight == 0.1
    assert c.stages.stage3.lr == 2e-6
    assert c.model.resampler.name == "bimamba"


def test_presets_ship_and_paper_equals_seed():
    assert {"tiny", "paper"} <= set(available_presets())
    paper = resolve_config("paper")
    seed = CoraConfig(preset="paper")
    assert paper.model == seed.model
    assert paper.stages == seed.stages
    # the seed's prompt order and Stage-2 table (the tiny preset's deviations stay in tiny)
    assert paper.model.llm.vision_placement == "before-query" and paper.model.llm.trainable == "seed"
    assert paper.stages.stage2.resampler_lr_scale > 0 and paper.stages.stage2.projector_lr_scale == 1.0
    assert paper.data.train_targets == "all"
    assert resolve_config().preset == "tiny"


def test_precedence(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text("seed: 5\nstages:\n  stage2:\n    lr: 0.5\n    grad_accum: 2\n")
    c = resolve_config("paper", f, ["stages.stage2.lr=0.25"])
    assert c.seed == 5  # file over defaults
    assert c.stages.stage2.grad_accum == 2  # file over preset
    assert c.stages.stage2.lr == 0.25  # CLI over file
    assert c.stages.stage3.lr == 2e-6  # untouched default


def test_preset_named_in_file_is_used(tmp_path: Path):
    f = tmp_path / "exp.yaml"
    f.write_text("preset: paper\n")
    assert resolve_config(None, f).model.latent_dim == 1024
    assert resolve_config("tiny", f).preset == "tiny"  # CLI preset wins


def test_unknown_key_names_file_line_and_key(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("seed: 1\nstages:\n  stage2:\n    lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(None, f)
    msg = str(err.value)
    assert str(f) in msg and "line 4" in msg and "stages.stage2.lrr" in msg
    assert "did you mean 'lr'" in msg


def test_bad_value_names_key(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  latent_dim: wide\n")
    with pytest.raises(ConfigError, match=r"line 2.*model.latent_dim"):
        resolve_config(None, f)
    with pytest.raises(ConfigError, match="command line.*stages.stage1.lr"):
        resolve_config(overrides=["stages.stage1.lr=-1"])


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(None, tmp_path / "nope.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*invalid YAML"):
        resolve_config(None, f)


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        resolve_config("papr")


def test_changing_plugin_drops_previous_options(tmp_path: Path):
    f = tmp_path / "a.yaml"
    f.write_text("model:\n  resampler:\n    name: bimamba\n    options: {d_state: 8}\n")
    c = resolve_config(None, f, extra={"model": {"resampler": {"name": "mlp"}}})
    # bimamba's options are gone; mlp gets what the (tiny) preset sizes it with
    assert c.model.resampler.name == "mlp" and c.model.resampler.options == {"hidden_dim": 192}
    assert resolve_config("paper", f, extra={"model": {"resampler": {"name": "mlp"}}}).model.resampler.options == {}


def test_yaml_round_trip(tmp_path: Path):
    c = resolve_config("paper", overrides=["seed=9"])
    f = tmp_path / "resolved.yaml"
    f.write_text(to_yaml(c))
    assert resolve_config(None, f) == c


def test_changing_plugin_with_new_options_drops_old_ones(tmp_path: Path):
    f = tmp_path / "a.yaml"
    f.write_text("model:\n  resampler:\n    name: bimamba\n    options: {d_state: 8}\n")
    c = resolve_config(None, f, extra={"model": {"resampler": {"name": "mlp", "options": {"hidden_dim": 32}}}})
    assert c.model.resampler.options == {"hidden_dim": 32}
    same = resolve_config(None, f, extra={"model": {"resampler": {"name": "bimamba", "options": {"d_conv": 2}}}})
    assert same.model.resampler.options["d_state"] == 8  # same plugin: options merge
    assert same.model.resampler.options["d_conv"] == 2


def test_set_plugin_name_drops_the_old_options():
    c = resolve_config("tiny", overrides=["model.resampler.name=mlp"])
    # bimamba's options are gone; mlp gets the preset's size for it (options_by_name)
    assert c.model.resampler.name == "mlp" and c.model.resampler.options == {"hidden_dim": 192}


def test_a_dist_qualified_name_of_the_same_plugin_keeps_its_options():
    c = resolve_config("tiny", extra={"model": {"resampler": {"name": "cora-kit:bimamba"}}})
    assert c.model.resampler.options["hidden_dim"] == 64  # same plugin as the preset's bimamba
    other = resolve_config("tiny", extra={"model": {"resampler": {"name": "cora-kit:mlp"}}})
    assert other.model.resampler.options == {"hidden_dim": 192}  # tiny's size for mlp, no bimamba key


def test_plugin_options_layer_over_the_plugin_the_layers_below_chose():
    c = resolve_config(
        "tiny", overrides=["model.resampler.name=mlp"], plugin_options={"resampler": {"hidden_dim": 32}}
    )
    assert c.model.resampler.name == "mlp" and c.model.resampler.options == {"hidden_dim": 32}
    same = resolve_config("tiny", plugin_options={"resampler": {"d_state": 4}})
    assert same.model.resampler.options["d_state"] == 4 and same.model.resampler.options["hidden_dim"] == 64


def test_a_layer_names_its_file_and_line_in_errors(tmp_path: Path):
    from cora_kit.config import ConfigLayer

    layer = ConfigLayer("exp.yaml (config)", {"stages": {"stage1": {"lrr": 1}}}, {("stages", "stage1", "lrr"): 7})
    with pytest.raises(ConfigError, match=r"exp.yaml \(config\) line 7: unknown config key 'stages.stage1.lrr'"):
        resolve_config("tiny", layers=[layer])


def test_set_replaces_a_mapping_value_wholesale():
    c = resolve_config("tiny", overrides=["model.resampler.options={d_state: 4}"])
    assert c.model.resampler.options == {"d_state": 4}
    llm = resolve_config("tiny", overrides=["model.llm.arch={hidden_size: 32}"])
    assert llm.model.llm.arch == {"hidden_size": 32}


@pytest.mark.parametrize("name", ["mlp", "cora-kit:mlp", "c-abstractor", "cabstractor", "perceiver", "qformer", "bimamba"])
def test_tiny_sizes_every_builtin_resampler_alike(name: str) -> None:
    from cora_kit.registry import REGISTRY

    options = resolve_config("tiny", overrides=[f"model.resampler.name={name}"]).model.resampler.options
    assert options, name
    module = REGISTRY.create("resampler", name, in_dim=64, out_dim=64, **options)
    assert 50_000 < sum(p.numel() for p in module.parameters()) < 80_000  # the seed widths: 2.6M-63M


def test_options_by_name_apply_only_where_no_layer_gives_options() -> None:
    mine = resolve_config("tiny", overrides=["model.resampler.name=c-abstractor"],
                          plugin_options={"resampler": {"hidden_dim": 32}})
    assert mine.model.resampler.options == {"hidden_dim": 32}
    assert resolve_config("paper", overrides=["model.resampler.name=mlp"]).model.resampler.options == {}
    assert resolve_config("tiny", overrides=["model.resampler.name=avgpool"]).model.resampler.options == {}
