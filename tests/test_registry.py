"""The plugin registry: conflicts, dist:name, broken plugins, env filters, check_pending."""

from __future__ import annotations

import types
import warnings

import pytest
from pydantic import BaseModel

import cora_kit
from cora_kit import hookimpl
from cora_kit.errors import PluginConflictError, PluginParamsError, UnknownPluginError
from cora_kit.registry import REGISTRY, PluginLoadWarning, Registry
import cora_kit.registry as registry_module


class FooParams(BaseModel):
    width: int = 4


class Foo:
    def __init__(self, width: int = 4) -> None:
        self.width = width


def _resampler_plugin(name: str, aliases: tuple[str, ...] = ()) -> object:
    class Plugin:
        @hookimpl
        def register_resamplers(self, register):
            register(name, Foo, aliases=aliases, params=FooParams, backend="test")

    return Plugin()


def test_builtins_listed_with_distribution():
    infos = {(i.kind, i.name): i for i in cora_kit.list_plugins()}
    for name in ("identity", "mlp"):
        info = infos[("resampler", name)]
        assert info.distribution == "cora-kit"
        assert info.status == "ok"
        assert info.version == cora_kit.__version__
        assert "properties" in info.params


def test_create_validates_params_and_names_the_field(register_plugin):
    register_plugin(_resampler_plugin("foo"), "foo-plugin", distribution="dist-a")
    assert cora_kit.create("resampler", "foo", width=7).width == 7
    with pytest.raises(PluginParamsError, match="unknown parameter 'wdth'"):
        cora_kit.create("resampler", "foo", wdth=7)
    with pytest.raises(PluginParamsError, match="invalid parameter 'width'"):
        cora_kit.create("resampler", "foo", width="wide")


def test_none_params_keep_defaults(register_plugin):
    register_plugin(_resampler_plugin("foo"), "foo-plugin", distribution="dist-a")
    assert cora_kit.create("resampler", "foo", width=None).width == 4


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownPluginError) as err:
        cora_kit.create("resampler", "mlpp")
    msg = str(err.value)
    assert "did you mean 'mlp'" in msg
    assert "identity" in msg and "mlp" in msg  # the available names of that kind


def test_alias_resolves(register_plugin):
    register_plugin(_resampler_plugin("c-foo", aliases=("cfoo",)), "p", distribution="dist-a")
    assert isinstance(cora_kit.create("resampler", "cfoo"), Foo)


def test_conflict_names_both_distributions_and_dist_name_selects(register_plugin):
    register_plugin(_resampler_plugin("foo"), "plugin-a", distribution="dist-a")
    register_plugin(_resampler_plugin("foo"), "plugin-b", distribution="dist-b")
    with pytest.raises(PluginConflictError) as err:
        cora_kit.create("resampler", "foo")
    assert "dist-a" in str(err.value) and "dist-b" in str(err.value)
    assert cora_kit.create("resampler", "dist-b:foo").plugin_spec.distribution == "dist-b"
    listed = [i for i in cora_kit.list_plugins("resampler") if i.name == "foo"]
    assert {i.distribution for i in listed} == {"dist-a", "dist-b"}
    assert all("also registered by" in (i.error or "") for i in listed)


def test_invalid_plugin_name_is_reported_not_fatal(register_plugin):
    REGISTRY._warned = False  # warn-once state of the shared registry
    register_plugin(_resampler_plugin("Bad_Name"), "bad-plugin", distribution="dist-bad")
    failures = [f for f in REGISTRY.failures if f.distribution == "dist-bad"]
    assert failures and "kebab" in failures[0].error
    with pytest.warns(PluginLoadWarning, match="dist-bad"):
        assert Registry.create(REGISTRY, "resampler", "mlp") is not None


def test_misspelt_hook_caught_by_check_pending(register_plugin):
    class Misspelt:
        @hookimpl
        def register_resampler(self, register):  # missing "s"
            register("x", Foo)

    register_plugin(Misspelt(), "misspelt", distribution="dist-typo")
    failures = [f for f in REGISTRY.failures if f.distribution == "dist-typo"]
    assert len(failures) == 1
    assert "register_resampler" in failures[0].error
    assert "did you mean 'register_resamplers'" in failures[0].error
    assert cora_kit.create("resampler", "mlp") is not None


class _FakeDist:
    def __init__(self, name: str, version: str = "1.0") -> None:
        self.name, self.version = name, version


class _FakeEntryPoint:
    def __init__(self, name: str, dist: str, loader) -> None:
        self.name, self.dist, self._loader = name, _FakeDist(dist), loader

    def load(self):
        return self._loader()


def _fake_entry_points(monkeypatch, extra):
    """Exactly the built-ins + ``extra`` are installed, and nothing pins the plugin set."""
    monkeypatch.delenv("CORA_KIT_PLUGINS", raising=False)
    real = list(registry_module.entry_points(group="cora_kit"))
    builtins = [ep for ep in real if ep.dist.name == "cora-kit"]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: builtins + extra)


def _module_with_resampler(name: str) -> types.ModuleType:
    module = types.ModuleType(f"fake_{name}")

    @hookimpl
    def register_resamplers(register):
        register(name, Foo, params=FooParams)

    module.register_resamplers = register_resamplers
    return module


def test_broken_distribution_is_isolated_and_reported(monkeypatch):
    def boom():
        raise ImportError("No module named 'missing_dep'")

    _fake_entry_points(
        monkeypatch,
        [
            _FakeEntryPoint("broken", "broken-dist", boom),
            _FakeEntryPoint("good", "good-dist", lambda: _module_with_resampler("good")),
        ],
    )
    reg = Registry()
    infos = reg.list_plugins()
    errors = [i for i in infos if i.status == "error"]
    assert len(errors) == 1
    assert errors[0].distribution == "broken-dist"
    assert "missing_dep" in (errors[0].error or "")
    with pytest.warns(PluginLoadWarning, match="broken-dist"):
        assert reg.create("resampler", "good").width == 4
    assert reg.create("resampler", "mlp") is not None


def test_cora_kit_plugins_env_loads_only_listed(monkeypatch):
    _fake_entry_points(
        monkeypatch,
        [
            _FakeEntryPoint("a", "dist-a", lambda: _module_with_resampler("from-a")),
            _FakeEntryPoint("b", "dist-b", lambda: _module_with_resampler("from-b")),
        ],
    )
    monkeypatch.setenv("CORA_KIT_PLUGINS", "dist-a")
    names = {i.name for i in Registry().list_plugins("resampler")}
    assert "from-a" in names and "from-b" not in names and "mlp" in names
    monkeypatch.setenv("CORA_KIT_PLUGINS", "")
    names = {i.name for i in Registry().list_plugins("resampler")}
    assert "from-a" not in names and "mlp" in names


def test_disable_autoload_loads_builtins_only(monkeypatch):
    _fake_entry_points(
        monkeypatch, [_FakeEntryPoint("a", "dist-a", lambda: _module_with_resampler("from-a"))]
    )
    monkeypatch.setenv("CORA_KIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    names = {i.name for i in Registry().list_plugins("resampler")}
    assert "from-a" not in names and {"identity", "mlp"} <= names


def test_example_distribution_is_listed():
    infos = {(i.kind, i.name): i for i in cora_kit.list_plugins()}
    if ("resampler", "linear") not in infos:
        pytest.skip("example distribution plugins/cora-kit-barlow is not installed")
    assert infos[("resampler", "linear")].distribution == "cora-kit-barlow"
    assert infos[("loss", "barlow")].distribution == "cora-kit-barlow"
    assert infos[("loss", "barlow")].status == "ok"


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(cora_kit.CoraKitError, match="did you mean 'resampler'"):
        cora_kit.create("resamplers", "mlp")


def test_no_warning_when_everything_loads():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        cora_kit.create("resampler", "mlp")
