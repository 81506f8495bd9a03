"""`cora-kit new-plugin`: the generated package is valid, passes check-plugin in process and
once pip-installed; a deliberately broken variant fails with expected-vs-got messages."""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cora_kit import testing as T
from cora_kit.cli import main
from cora_kit.commands.new_plugin import TEMPLATE_KINDS, generate
from cora_kit.registry import REGISTRY

BIN = Path(sys.executable).parent

GOOD = "return self.proj(self.norm(x))"
BROKEN = (
    "y = self.proj((x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True))\n"
    "        return y[:, :-1]  # broken on purpose: NaN on constant input, one token short"
)


def _break(root: Path, module: str) -> None:
    path = root / "src" / module / "resampler.py"
    text = path.read_text()
    assert GOOD in text
    path.write_text(text.replace(GOOD, BROKEN))


def test_generated_files(tmp_path):
    out = tmp_path / "pkg"
    assert main(["new-plugin", "--kind", "resampler", "--name", "my-resampler", "--out", str(out)]) == 0
    meta = tomllib.loads((out / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "cora-kit-my-resampler"
    assert meta["project"]["entry-points"]["cora_kit"] == {"my_resampler": "cora_kit_my_resampler.plugin"}
    for path in out.rglob("*.py"):
        py_compile.compile(str(path), doraise=True)
    assert "class MyResampler(Resampler)" in (out / "src/cora_kit_my_resampler/resampler.py").read_text()
    assert 'parametrize_checks("resampler", "cora-kit-my-resampler:my-resampler")' in (out / "tests/test_contract.py").read_text()
    assert "cora-kit check-plugin my-resampler" in (out / "README.md").read_text()


def test_generate_user_errors(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert main(["new-plugin", "--kind", "resampler", "--name", "ok", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    assert main(["new-plugin", "--kind", "resampler", "--name", "My_Thing", "--out", str(tmp_path / "a")]) == 2
    assert "kebab-case" in capsys.readouterr().err
    assert main(["new-plugin", "--kind", "encoder", "--name", "enc", "--out", str(tmp_path / "b")]) == 2
    assert "no template for kind 'encoder'" in capsys.readouterr().err


@pytest.fixture
def import_generated(register_plugin, monkeypatch):
    """Generate a package, import its plugin module from src/ and register it (no pip)."""

    def _load(kind: str, name: str, root: Path, broken: bool = False) -> None:
        generate(kind, name, root)
        module = f"cora_kit_{name.replace('-', '_')}"
        if broken:
            _break(root, module)
        monkeypatch.syspath_prepend(str(root / "src"))
        for mod in [m for m in sys.modules if m.startswith(module)]:
            monkeypatch.delitem(sys.modules, mod)
        plugin = __import__(f"{module}.plugin", fromlist=["plugin"])
        register_plugin(plugin, name=f"cora-kit-{name}:{module}", distribution=f"cora-kit-{name}")

    return _load


@pytest.mark.parametrize("kind", sorted(TEMPLATE_KINDS))
def test_every_template_passes_its_checks(kind, tmp_path, import_generated):
    name = f"tmpl-{kind}"
    import_generated(kind, name, tmp_path / name)
    results = T.run_checks(kind, name)
    assert [r for r in results if r.status == "failed"] == []
    assert sum(r.status == "passed" for r in results) >= 4


def test_broken_variant_fails_in_process(tmp_path, import_generated):
    import_generated("resampler", "tmpl-broken", tmp_path / "b", broken=True)
    fails = {r.check: r.message for r in T.run_checks("resampler", "tmpl-broken") if r.status == "failed"}
    assert fails["check_output_shape"] == (
        "resampler 'tmpl-broken' returned [2, 255, 48]; expected [2, 256, 48] for declared grid (16, 16)"
    )
    assert "NaN/Inf for a constant input" in fails["check_no_nan_on_constant_input"]


def _cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "cora-kit"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.slow  # pip + four fresh interpreters importing torch: >20 s on 2 busy cores
def test_pip_installed_package_appears_and_passes(tmp_path):
    """The acceptance test: generate good + broken packages, pip install both (editable, no
    network), list them with `cora-kit plugins`, check them; uninstall in finally."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    generate("resampler", "accept-resampler", good)
    generate("resampler", "accept-broken", bad)
    _break(bad, "cora_kit_accept_broken")
    dists = ["cora-kit-accept-resampler", "cora-kit-accept-broken"]
    pip = [sys.executable, "-m", "pip"]
    env = {**os.environ, "CORA_KIT_PLUGINS": ",".join(dists)}
    env.pop("CORA_KIT_DISABLE_PLUGIN_AUTOLOAD", None)
    try:
        subprocess.run(
            [*pip, "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(good), "-e", str(bad)],
            check=True, capture_output=True, timeout=300,
        )
        listed = _cli("plugins", "--json", "--kind", "resampler", env=env)
        assert listed.returncode == 0, listed.stderr
        rows = {r["name"]: r for r in json.loads(listed.stdout)}
        assert rows["accept-resampler"]["distribution"] == "cora-kit-accept-resampler"
        assert rows["accept-resampler"]["status"] == "ok"

        ok = _cli("check-plugin", "accept-resampler", "--kind", "resampler", env=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "0 failed" in ok.stdout

        broken = _cli("check-plugin", "--dist", "cora-kit-accept-broken", env=env)
        assert broken.returncode == 1
        assert (
            "check_output_shape: resampler 'accept-broken' returned [2, 255, 48]; expected [2, 256, 48]"
            " for declared grid (16, 16)" in broken.stderr
        )
        assert "check_no_nan_on_constant_input: resampler 'accept-broken' returned NaN/Inf" in broken.stderr

        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(good / "tests")],
            capture_output=True, text=True, env=env, cwd=good, timeout=300,
        )
        assert tests.returncode == 0, tests.stdout[-2000:]
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", *dists], capture_output=True, timeout=300)
        REGISTRY.reset()
