"""Shared fixtures. Tests register throwaway plugins per test (llm-style)."""

from __future__ import annotations

import os

# One intra-op thread, set before torch is imported: the tests' tensors are small, and on
# shared or oversubscribed cores OpenMP spin-waits made 2-thread steps up to 100x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The suite's plugin set is pinned: the built-ins plus the example distribution, whatever
# else is installed (tests/test_plugin_isolation.py proves it with an unknown plugin).
SUITE_PLUGINS = "cora-kit-barlow"
os.environ["CORA_KIT_PLUGINS"] = SUITE_PLUGINS
os.environ.pop("CORA_KIT_DISABLE_PLUGIN_AUTOLOAD", None)

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from cora_kit.registry import REGISTRY  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real panoramas (Mars, Moon): $CORA_KIT_TEST_DATA or ../shared/data."""
    env = os.environ.get("CORA_KIT_TEST_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "data"]:
        if candidate.is_dir() and any(candidate.glob("*.png")):
            return candidate
    return None


@pytest.fixture
def real_panoramas() -> dict[str, Path]:
    """Paths of the two real ERP photographs; skips with a reason when absent."""
    root = shared_data_dir()
    if root is None:
        pytest.skip("real panoramas not found: set CORA_KIT_TEST_DATA or provide ../shared/data")
    return {
        "mars": root / "mars-spirit-husband-hill-erp-2048x1024.png",
        "moon": root / "moon-apollo17-erp-2048x1024.png",
    }


@pytest.fixture
def register_plugin() -> Iterator:
    """``register_plugin(obj, name, distribution=...)``; unregistered after the test."""
    names: list[str] = []

    def _register(obj: object, name: str, distribution: str | None = None, version: str = "0") -> None:
        REGISTRY.register_plugin(obj, name=name, distribution=distribution, version=version)
        names.append(name)

    try:
        yield _register
    finally:
        for name in names:
            REGISTRY.unregister_plugin(name)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny-preset run folder (a few steps per stage) shared by the caption, export
    and integrity tests; tests that change it work on a copy."""
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel
    from cora_kit.train.engine import run

    root = tmp_path_factory.mktemp("caption")
    # a high Stage-3 lr so the LoRA adapters end far from zero and merging them matters
    sets = [f"data.synth_dir={root / 'synth'}", "data.synth.n_train=8", "data.synth.n_val=2", "data.synth.n_test=4",
            "stages.stage1.max_steps=1", "stages.stage2.max_steps=1", "stages.stage3.max_steps=2",
            "stages.stage3.lr=1e-2", "eval.metrics=[bleu4]", "eval.max_new_tokens=4", "device=cpu"]
    run(resolve_config("tiny", None, sets), root / "runs" / "t", model_factory=CoraModel.from_config, progress=False)
    return root / "runs" / "t"


@pytest.fixture(scope="session")
def exported(tiny_run: Path) -> Path:
    """``cora-kit export`` of ``tiny_run``."""
    from cora_kit.cli import main

    out = tiny_run.parent.parent / "exported"
    assert main(["export", "--run", str(tiny_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained once per test session (a few steps per stage, 8 synthetic
    panoramas): a real model for the serving tests. Do not write into it."""
    from cora_kit.config import resolve_config
    from cora_kit.pipeline import CoraModel
    from cora_kit.train.engine import run

    root = tmp_path_factory.mktemp("tiny-trained")
    sets = [f"data.synth_dir={root / 'synth'}", "data.synth.n_train=8", "data.synth.n_val=2", "data.synth.n_test=4",
            "stages.stage1.max_steps=1", "stages.stage2.max_steps=2", "stages.stage3.max_steps=2",
            "eval.metrics=[bleu4]", "eval.max_new_tokens=6", "device=cpu"]
    out = root / "runs" / "tiny"
    run(resolve_config("tiny", None, sets), out, model_factory=CoraModel.from_config, progress=False)
    return out


# --- a real headless browser (tests/browser.py) -----------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Chromium for one test module (skips without one; see tests/browser.py)."""
    from browser import launched_browser

    with launched_browser() as b:
        yield b


@pytest.fixture
def page(browser) -> Iterator:  # noqa: ANN001
    """A fresh 1280x720 page; ``page.errors`` collects console and page errors."""
    from browser import new_page

    with new_page(browser) as pg:
        yield pg
