"""One-line answers where the CLI used to show tracebacks, hide text or mislead (issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import Field

import cora_kit
from cora_kit import hookimpl
from cora_kit.cli import main
from cora_kit.config import resolve_config
from cora_kit.errors import ConfigError, UnknownPluginError
from cora_kit.interfaces import Metric, PluginParams, Resampler, ResamplerParams


class _Missing(Metric):
    """Always unavailable; its reason has [brackets] that rich would eat as markup."""

    def available(self):
        return False, "unavailable: needs [corenlp] jars"

    def score(self, predictions, references):
        raise RuntimeError("never")


class _BigParams(ResamplerParams):
    width: int = Field(7, ge=1)


class _Big(Resampler):
    """Another distribution's 'mlp': a different size than the built-in one."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024, width: int = 7) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = torch.nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x, grid):
        raise ValueError("needs [tile] grid")


class _Plugin:
    @hookimpl
    def register_metrics(self, register):
        register("always-missing", _Missing, params=PluginParams, backend="a [java] jar")

    @hookimpl
    def register_resamplers(self, register):
        register("mlp", _Big, params=_BigParams)


@pytest.fixture
def other_dist(register_plugin) -> None:
    register_plugin(_Plugin(), name="cora-kit-other", distribution="cora-kit-other")


def test_plugins_reports_unavailable_metrics_with_reason(other_dist, capsys) -> None:
    assert main(["plugins", "--kind", "metric", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["always-missing"]["status"] == "unavailable"
    assert rows["always-missing"]["error"] == "unavailable: needs [corenlp] jars"
    assert "pycocoevalcap" in rows["cider"]["backend"]  # CIDEr runs in Python on PTB tokens
    assert main(["plugins", "--kind", "metric"]) == 0
    out = capsys.readouterr().out
    assert "unavailable" in out and "needs [corenlp] jars" in out and "a [java] jar" in out


def test_parameter_counts_are_per_distribution(other_dist, capsys) -> None:
    assert main(["plugins", "--kind", "resampler", "--json"]) == 0
    rows = {(r["distribution"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("cora-kit", "mlp")]["num_params"] == 5_711_872
    assert rows[("cora-kit-other", "mlp")]["num_params"] == 1152 * 1024


def test_misspelt_distribution_is_named(capsys) -> None:
    with pytest.raises(UnknownPluginError) as err:
        cora_kit.create("resampler", "cora-kit-tom:mlp")
    text = str(err.value)
    assert "no installed distribution 'cora-kit-tom' registers resamplers" in text
    assert "'mlp' is registered by cora-kit: use 'cora-kit:mlp'" in text
    assert "did you mean 'mlp'" not in text
    with pytest.raises(UnknownPluginError, match="distribution 'cora-kit-barlow' has no resampler 'mlp'"):
        cora_kit.create("resampler", "cora-kit-barlow:mlp")


def test_check_plugin_prints_brackets(other_dist, capsys) -> None:
    assert main(["check-plugin", "cora-kit-other:mlp"]) == 1
    captured = capsys.readouterr()
    assert "needs [tile] grid" in captured.out and "needs [tile] grid" in captured.err


def test_tile_layout_is_a_deprecated_alias_of_tiler(tmp_path, capsys) -> None:
    from PIL import Image

    pano = tmp_path / "pano.png"
    Image.fromarray(np.full((32, 64, 3), 90, dtype=np.uint8)).save(pano)
    assert main(["tile", str(pano), "--out", str(tmp_path / "a.png"), "--layout", "cubemap"]) == 0
    assert "--layout is deprecated; use --tiler" in capsys.readouterr().err
    assert main(["tile", str(pano), "--out", str(tmp_path / "b.png"), "--tiler", "cubemap"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main(["tile", str(pano), "--out", str(tmp_path / "c.png"), "--tiler", "e2p", "--layout", "cubemap"]) == 2


def test_model_summary_tiny_preset(capsys) -> None:
    assert main(["model-summary"]) == 0
    assert "llm" in capsys.readouterr().out
    assert main(["model-summary", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    llm = summary["components"]["llm"]
    assert llm["trainable"]["stage2"] == llm["params"] > 0  # tiny preset: the LM trains fully


def test_identity_builds_in_the_paper_preset(capsys) -> None:
    assert main(["model-summary", "--preset", "paper", "--set", "model.resampler.name=identity", "--json"]) == 0
    assert "Traceback" not in capsys.readouterr().err


class _Shrinks(Resampler):
    """Keeps the grid in training, drops a token in evaluation (what the guard catches)."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = torch.nn.Linear(in_dim, out_dim)

    def forward(self, x, grid):
        y = self.proj(x)
        return y if self.training else y[:, :-1]


class _ShrinksPlugin:
    @hookimpl
    def register_resamplers(self, register):
        register("shrinks", _Shrinks, params=ResamplerParams)


def test_resampler_changing_its_token_count_in_evaluation_is_one_line(register_plugin) -> None:
    from cora_kit.pipeline import CoraModel

    register_plugin(_ShrinksPlugin(), name="cora-kit-shrinks", distribution="cora-kit-shrinks")
    model = CoraModel.from_config(resolve_config("tiny", None, ["model.resampler.name=shrinks"]))
    feats = torch.zeros(1, model.layout.num_views, model.grid[0] * model.grid[1], model.encoder.hidden_size)
    model.train()
    assert model.resample(feats).shape[2] == model.grid[0] * model.grid[1]
    model.eval()
    with pytest.raises(ConfigError, match="'shrinks' returned .* in evaluation mode; the model was built for"):
        model.resample(feats)
