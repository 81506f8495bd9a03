"""cora_kit.testing and `cora-kit check-plugin`: every registered plugin passes its checks,
and deliberately broken plugins fail with messages that say expected vs got."""

from __future__ import annotations

import json
import random

import pytest
import torch
from pydantic import BaseModel
from torch import nn

import cora_kit
from cora_kit import hookimpl
from cora_kit import testing as T
from cora_kit.cli import main
from cora_kit.interfaces import Metric, OverlapLoss, PluginParams, Resampler, ResamplerParams

# --- every registered plugin (built-ins, the example distribution, whatever lands later) ---

#: {(kind, name): {check: reason}} for plugins that by design cannot pass a check
KNOWN_FAILURES: dict[tuple[str, str], dict[str, str]] = {
    ("loss", "none"): {
        "check_gradients_flow": "the 'none' loss disables stage-1 alignment: constant 0",
        "check_identical_pairs_lower_than_random": "the 'none' loss is 0 for any input",
    },
}
#: plugins whose checks take > 20 s here (METEOR starts a JVM and loads paraphrase tables)
SLOW_PLUGINS = {("metric", "meteor"), ("metric", "spice")}
_SUBJECTS: dict[tuple[str, str], T.Subject] = {}


def _tiny_arch(kind: str) -> dict:
    """Random-init small config of the tiny preset (no weights needed)."""
    import yaml
    from importlib.resources import files

    tiny = yaml.safe_load((files("cora_kit.configs") / "tiny.yaml").read_text())["model"]
    return {"random_init": True, "arch": tiny[kind]["arch"]}


#: {(kind, name): params} on top of cora_kit.testing.small_params, to keep checks fast
#: (these plugins could declare them as ``testing_params`` on their params models instead)
TEST_PARAMS: dict[tuple[str, str], object] = {
    ("resampler", "bimamba"): lambda: {"num_layers": 1, "d_state": 16},
    ("encoder", "siglip2"): lambda: _tiny_arch("encoder"),
    ("llm", "qwen3"): lambda: _tiny_arch("llm"),
}


def _every_check() -> list:
    out = []
    for info in cora_kit.list_plugins():
        if info.status != "ok" or info.kind not in T.INTERFACE:
            continue
        qualified = f"{info.distribution}:{info.name}"
        marks = [pytest.mark.slow] if (info.kind, info.name) in SLOW_PLUGINS else []
        for check in T.checks_for(info.kind):
            out.append(pytest.param(info.kind, qualified, check.name, marks=marks, id=f"{info.kind}:{info.name}-{check.name}"))
    return out


@pytest.mark.parametrize("kind,qualified,check_name", _every_check())
def test_every_registered_plugin_passes(kind, qualified, check_name):
    key = (kind, qualified)
    if key not in _SUBJECTS:
        extra = TEST_PARAMS.get((kind, qualified.split(":", 1)[1]))
        _SUBJECTS[key] = T.make_subject(kind, qualified, extra() if extra else None)
    subject = _SUBJECTS[key]
    check = next(c for c in T.checks_for(kind) if c.name == check_name)
    known = KNOWN_FAILURES.get((kind, subject.spec.name))
    result = T.run_check(subject, check, known)
    if result.status == "skipped":
        pytest.skip(result.message)
    assert result.status in ("passed", "xfailed"), result.message


def test_builtins_and_example_distribution_are_covered():
    names = {(x.values[0], x.values[1].split(":")[1]) for x in _every_check()}
    assert {("resampler", "identity"), ("resampler", "mlp"), ("resampler", "linear"), ("loss", "barlow")} <= names


# --- throwaway plugins, good and broken ---------------------------------------------


class _Params(ResamplerParams):
    pass


class ShortResampler(Resampler):
    """Drops the last token but declares the input grid."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x, grid):
        return self.proj(x)[:, :-1]


class PoolResampler(ShortResampler):
    """2x2 average pooling, correctly declared."""

    def output_grid(self, grid):
        return (grid[0] // 2, grid[1] // 2)

    def forward(self, x, grid):
        n, _, d = x.shape
        img = x.transpose(1, 2).reshape(n, d, *grid)
        pooled = nn.functional.avg_pool2d(img, 2).flatten(2).transpose(1, 2)
        return self.proj(pooled)


class LyingPoolResampler(PoolResampler):
    def output_grid(self, grid):
        return grid


class NanResampler(ShortResampler):
    def forward(self, x, grid):
        return self.proj((x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True))


class BatchMixResampler(ShortResampler):
    def forward(self, x, grid):
        return self.proj(x - x.mean(0, keepdim=True))


class UnseededResampler(ShortResampler):
    def __init__(self, in_dim: int = 1152, out_dim: int = 1024) -> None:
        super().__init__(in_dim, out_dim)
        with torch.no_grad():
            self.proj.weight.mul_(1 + random.random())


class UnusedParamResampler(ShortResampler):
    def __init__(self, in_dim: int = 1152, out_dim: int = 1024) -> None:
        super().__init__(in_dim, out_dim)
        self.spare = nn.Linear(4, 4)

    def forward(self, x, grid):
        return self.proj(x)


class HiddenStateResampler(ShortResampler):
    """Keeps a random matrix outside the state_dict."""

    def __init__(self, in_dim: int = 1152, out_dim: int = 1024) -> None:
        super().__init__(in_dim, out_dim)
        self.secret = torch.randn(in_dim)

    def forward(self, x, grid):
        return self.proj(x * self.secret)


class UpcastResampler(ShortResampler):
    def forward(self, x, grid):
        return self.proj(x).float()


class OpenParams(BaseModel):  # no extra="forbid", a required field
    in_dim: int
    out_dim: int = 1024


class ScalarLoss(OverlapLoss):
    """Not scalar: returns a [1] tensor and tensor-valued logs."""

    def forward(self, features, correspondences, grid):
        v = features.pow(2).mean().reshape(1)
        return v, {"v": v}


class NanLoss(OverlapLoss):
    """Standardises without eps: NaN on constant features."""

    def forward(self, features, correspondences, grid):
        from cora_kit.overlap import matched_features

        a, b = matched_features(features, correspondences, grid)
        a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True)
        b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True)
        return (a - b).pow(2).mean(), {}


class LenientMetric(Metric):
    """Scores ids without references instead of rejecting them."""

    def score(self, predictions, references):
        hits = [float(predictions[k] in references.get(k, [])) for k in predictions]
        return {"exact": sum(hits) / len(hits)}


class DetachedLoss(OverlapLoss):
    """Computes the loss from .item(): no gradient can reach the features."""

    def forward(self, features, correspondences, grid):
        return torch.tensor(float(features.float().pow(2).mean().item())), {}


class _Broken:
    @hookimpl
    def register_resamplers(self, register):
        for name, cls in [
            ("short", ShortResampler), ("pool", PoolResampler), ("lying-pool", LyingPoolResampler),
            ("nan", NanResampler), ("batch-mix", BatchMixResampler), ("unseeded", UnseededResampler),
            ("unused-param", UnusedParamResampler), ("hidden-state", HiddenStateResampler),
            ("upcast", UpcastResampler),
        ]:
            register(name, cls, params=_Params)
        register("open-params", ShortResampler, params=OpenParams)
        register("not-a-resampler", lambda in_dim=1152, out_dim=1024: nn.Linear(in_dim, out_dim), params=_Params)

    @hookimpl
    def register_losses(self, register):
        register("not-scalar", ScalarLoss, params=PluginParams)
        register("nan-loss", NanLoss, params=PluginParams)
        register("detached", DetachedLoss, params=PluginParams)

    @hookimpl
    def register_metrics(self, register):
        register("lenient", LenientMetric, params=PluginParams)


@pytest.fixture
def broken(register_plugin):
    register_plugin(_Broken(), name="broken-kit", distribution="broken-kit")


def _failures(kind: str, name: str) -> dict[str, str]:
    return {r.check: r.message for r in T.run_checks(kind, name) if r.status == "failed"}


def test_wrong_output_shape_message(broken):
    fails = _failures("resampler", "short")
    assert fails["check_output_shape"] == (
        "resampler 'short' returned [2, 255, 48]; expected [2, 256, 48] for declared grid (16, 16)"
    )


def test_declared_grid_is_honoured(broken):
    assert _failures("resampler", "pool") == {}
    fails = _failures("resampler", "lying-pool")
    assert "returned [2, 64, 48]; expected [2, 256, 48] for declared grid (16, 16)" in fails["check_output_shape"]
    assert "check_declared_grid" in fails


@pytest.mark.parametrize(
    "name,check,fragment",
    [
        ("nan", "check_no_nan_on_constant_input", "NaN/Inf for a constant input"),
        ("batch-mix", "check_batch_independence", "when run alone vs in a batch of 3"),
        ("unseeded", "check_determinism_with_seed", "two builds with seed 123"),
        ("unused-param", "check_gradients_flow", "['spare.weight', 'spare.bias']"),
        ("hidden-state", "check_state_dict_roundtrip_safetensors", "after a safetensors round trip"),
        ("upcast", "check_dtype_float32_bf16", "returned torch.float32 for a bfloat16 model"),
        ("open-params", "check_params_schema", "accepts unknown keys"),
        ("not-a-resampler", "check_interface", "built a Linear; expected a subclass of cora_kit.interfaces.Resampler"),
    ],
)
def test_broken_resampler_fails_one_check(broken, name, check, fragment):
    fails = _failures("resampler", name)
    assert check in fails, f"{check} passed for '{name}'"
    assert fragment in fails[check]


def test_broken_losses_and_metric(broken):
    not_scalar = _failures("loss", "not-scalar")
    assert "expected a 0-dim tensor" in not_scalar["check_scalar_and_logs"]
    for check in ("check_gradients_flow", "check_dtype_float32_bf16", "check_determinism_with_seed",
                  "check_no_nan_on_constant_input", "check_identical_pairs_lower_than_random"):
        assert "expected a 0-dim float tensor (see check_scalar_and_logs)" in not_scalar[check], check
    detached = _failures("loss", "detached")
    assert "does not require grad: it is detached from the features" in detached["check_gradients_flow"]
    nan = _failures("loss", "nan-loss")
    assert "for constant features" in nan["check_no_nan_on_constant_input"]
    assert "expected ValueError naming 'ghost#q'" in _failures("metric", "lenient")["check_rejects_mismatched_ids"]


def test_strip_correspondences_make_identical_features_agree():
    from cora_kit.overlap import matched_features

    corr = T.strip_correspondences(3, (4, 4), 2)
    src, dst = matched_features(T.world_features(2, 3, (4, 4), 8, 2), corr, (4, 4))
    assert src.shape == (2, 4 * 8, 8) and torch.equal(src, dst)


def test_expected_failures_and_assert(broken):
    res = T.run_checks("resampler", "short", expected_failures={"check_output_shape": "known"})
    assert {r.check: r.status for r in res}["check_output_shape"] == "xfailed"
    res = T.run_checks("resampler", "pool", expected_failures={"check_output_shape": "stale"})
    bad = [r for r in res if r.check == "check_output_shape"][0]
    assert bad.status == "failed" and "listed as an expected failure" in bad.message
    with pytest.raises(T.CheckFailure, match="check_output_shape: resampler 'short' returned"):
        T.assert_plugin_passes("resampler", "short")
    assert all(r.ok for r in T.assert_plugin_passes("resampler", "pool"))


def test_parametrize_checks_marks_one_case_per_check(broken):
    mark = T.parametrize_checks("resampler", "short")
    argname, bound = mark.args[0], mark.args[1]
    assert argname == "check" and mark.kwargs["ids"] == [c.name for c in T.checks_for("resampler")]
    by_name = {b.check.name: b for b in bound}
    assert by_name["check_interface"]().status == "passed"
    with pytest.raises(T.CheckFailure, match="expected \\[2, 256, 48\\]"):
        by_name["check_output_shape"]()
    skipper = {b.check.name: b for b in T.parametrize_checks("loss", "barlow").args[1]}
    with pytest.raises(pytest.skip.Exception):
        skipper["check_zero_for_identical_pairs"]()


def test_small_params_and_overrides():
    spec = T.make_subject("resampler", "identity").spec
    assert T.small_params(spec) == {"in_dim": 32}  # keeps its width: no out_dim
    mlp = T.make_subject("resampler", "mlp", {"hidden_dim": 64})
    assert mlp.params == {"in_dim": 32, "out_dim": 48, "hidden_dim": 64}
    assert mlp.make().net[0].out_features == 64


# --- the CLI ----------------------------------------------------------------------


def test_cli_check_plugin_ok_and_dist(capsys):
    assert main(["check-plugin", "mlp", "--param", "hidden_dim=64"]) == 0
    assert "0 failed" in capsys.readouterr().out
    assert main(["check-plugin", "--dist", "cora-kit-barlow"]) == 0
    out = capsys.readouterr().out
    assert "cora-kit-barlow:linear" in out and "cora-kit-barlow:barlow" in out


def test_cli_check_plugin_failure_exit_1(broken, capsys):
    assert main(["check-plugin", "broken-kit:short", "--kind", "resampler"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert "check_output_shape: resampler 'short' returned [2, 255, 48]; expected [2, 256, 48]" in captured.err
    assert main(["check-plugin", "short", "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["check"] for r in rows if r["status"] == "failed"} == {"check_output_shape", "check_declared_grid"}


def test_cli_check_plugin_user_errors(capsys):
    assert main(["check-plugin", "no-such-plugin"]) == 2
    assert "no plugin of any kind is named 'no-such-plugin'" in capsys.readouterr().err
    assert main(["check-plugin", "mpl", "--kind", "resampler"]) == 2
    assert "did you mean 'mlp'" in capsys.readouterr().err
    assert main(["check-plugin", "--dist", "nobody"]) == 2
    assert "no plugin registered by distribution 'nobody'" in capsys.readouterr().err
    assert main(["check-plugin", "mlp", "--param", "oops"]) == 2
    assert main(["check-plugin", "mlp", "--param", "depth=3"]) == 2
    assert "unknown parameter 'depth'" in capsys.readouterr().err
