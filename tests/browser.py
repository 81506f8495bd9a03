"""Headless Chromium for the page and report tests (playwright driving the system browser).

The browser is Debian's ``chromium`` (``.ci/run`` installs it); ``CORA_KIT_CHROMIUM``
names another executable. Without one, the browser tests skip saying so (and fail under
``CI``, where ``.ci/run`` installs it). WebGL runs on
SwiftShader (software), so the 360-degree view renders on machines without a GPU.
Screenshots go to ``$CORA_KIT_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repo).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-gpu-sandbox"]


def chromium_path() -> str | None:
    env = os.environ.get("CORA_KIT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def artifacts_dir() -> Path:
    out = Path(os.environ.get("CORA_KIT_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def launched_browser() -> Iterator[Any]:
    """A headless Chromium (playwright's sync API); skips (fails under CI) when none is installed.

    Used by the ``browser`` fixture of tests/conftest.py with module scope: playwright's sync
    API holds an event loop while it runs, so it is closed before other modules run asyncio."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    exe = chromium_path()
    if exe is None:
        reason = "no Chromium found (apt-get install chromium, or set CORA_KIT_CHROMIUM)"
        if os.environ.get("CI"):  # .ci/run installs it: a CI without it must not pass silently
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def new_page(browser: Any) -> Iterator[Any]:
    """A fresh page (1280x720); console errors and page errors are collected in ``page.errors``."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(msg.text))
    try:
        yield pg
    finally:
        context.close()
