"""The suite pins its plugin set (tests/conftest.py: ``CORA_KIT_PLUGINS`` = the example
distribution), so a third-party plugin it does not know, installed on the machine, changes
neither which tests exist nor what they see. The intruder registers names that clash with
built-ins (``mlp``, ``vicreg``) and a resampler of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

INTRUDER = '''
from cora_kit import hookimpl
from cora_kit.interfaces import ResamplerParams


def _factory(in_dim: int = 1152, out_dim: int = 1024):
    raise RuntimeError("the intruder was built")


@hookimpl
def register_resamplers(register):
    register("mlp", _factory, params=ResamplerParams)
    register("intruder-only", _factory, params=ResamplerParams)


@hookimpl
def register_losses(register):
    register("vicreg", _factory, params=ResamplerParams)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that, on ``PYTHONPATH``, installs distribution ``cora-kit-intruder``."""
    root = tmp_path_factory.mktemp("intruder-site")
    (root / "cora_kit_intruder.py").write_text(INTRUDER)
    info = root / "cora_kit_intruder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cora-kit-intruder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cora_kit]\nintruder = cora_kit_intruder\n")
    return root


def _env(site: Path | None, pinned: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CORA_KIT_PLUGINS", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _python(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


#: the modules whose tests are generated from, or look at, the installed plugins
PLUGIN_SENSITIVE = ["tests/test_registry.py", "tests/test_cli_core.py", "tests/test_cli_contracts.py",
                    "tests/test_testing_kit.py"]


def _collect(env: dict[str, str], paths: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return sorted(line for line in out.stdout.splitlines() if "::" in line)


def test_the_intruder_is_installed_and_would_change_things(site: Path) -> None:
    code = "import json, cora_kit; print(json.dumps(sorted({i.distribution for i in cora_kit.list_plugins()})))"
    assert "cora-kit-intruder" in json.loads(_python(code, _env(site)))  # unpinned: it is loaded
    assert "cora-kit-intruder" not in json.loads(_python(code, {**_env(site), "CORA_KIT_PLUGINS": "cora-kit-barlow"}))


def test_plugin_sensitive_tests_are_the_same_and_pass_with_the_intruder(site: Path) -> None:
    """Same test ids with and without the intruder; the registry and CLI tests pass with it."""
    assert _collect(_env(site), PLUGIN_SENSITIVE) == _collect(_env(None), PLUGIN_SENSITIVE)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *PLUGIN_SENSITIVE[:3]]
    out = subprocess.run(cmd, env=_env(site), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:]


@pytest.mark.slow  # the whole suite again, in a subprocess: minutes
def test_the_whole_suite_is_the_same_and_passes_with_the_intruder(site: Path) -> None:
    assert _collect(_env(site), ["tests"]) == _collect(_env(None), ["tests"])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
           "--deselect", "tests/test_plugin_isolation.py"]
    out = subprocess.run(cmd, env=_env(site), cwd=ROOT, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:]
