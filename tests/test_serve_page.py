"""The serve page in a real headless Chromium: upload a panorama, look around in 360
degrees, toggle the tile geometry, ask a question, read the caption (screenshots saved)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="cora-kit serve needs the serve extra: pip install -e '.[serve]'")

from browser import artifacts_dir  # noqa: E402

from cora_kit.serving import Captioner  # noqa: E402
from cora_kit.serving.server import ServeSettings, background_server, create_app  # noqa: E402

QUESTION = "what is above the horizon?"


@pytest.fixture(scope="module")
def captioner(tiny_trained_run: Path) -> Captioner:
    return Captioner.from_run(tiny_trained_run, device="cpu")


@pytest.fixture(scope="module")
def server(captioner: Captioner) -> Iterator[str]:
    with background_server(create_app(captioner, ServeSettings(max_batch=4))) as url:
        yield url


def _centre_pixel(page: Any) -> list[int]:
    """RGB at the centre of the WebGL canvas (drawing buffer preserved)."""
    return page.evaluate("""() => {
        const c = document.getElementById('pano'); const gl = c.getContext('webgl2');
        const px = new Uint8Array(4);
        gl.readPixels(Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
        return [px[0], px[1], px[2]];
    }""")


def _erp_pixel(path: Path, lon_deg: float, lat_deg: float) -> np.ndarray:
    """Mean colour of the ERP around (lon, lat): what the view's centre must show."""
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    h, w = img.shape[:2]
    x = int(((lon_deg / 360 + 0.5) * w)) % w
    y = int((0.5 - lat_deg / 180) * h)
    return img[max(y - 2, 0): y + 3, max(x - 2, 0): x + 3].reshape(-1, 3).mean(0)


def _overlay_pixels(page: Any) -> int:
    return page.evaluate("""() => {
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;
    }""")


def test_upload_look_around_and_ask(page: Any, server: str, captioner: Captioner,
                                    real_panoramas: dict[str, Path]) -> None:
    mars = real_panoramas["mars"]
    out = artifacts_dir()
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('bimamba')")
    page.set_input_files("#file", str(mars))
    page.wait_for_selector("#stage[data-state=ready]")
    assert "2048x1024" in page.text_content("#filename")

    # the view's centre shows the panorama's direction the camera looks at (yaw 0, then 90)
    for yaw, pitch in ((0, 0), (90, 0), (-120, 20)):
        page.evaluate(f"window.coraViewer.look({yaw}, {pitch}, 60)")
        got = np.array(_centre_pixel(page), dtype=np.float64)
        want = _erp_pixel(mars, yaw, pitch)
        assert np.abs(got - want).max() < 24, (yaw, pitch, got, want)
    # dragging turns the view
    page.evaluate("window.coraViewer.look(0, 0, 100)")
    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + 600, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 400, box["y"] + 300, steps=5)
    page.mouse.up()
    assert 20 < page.evaluate("window.coraViewer.yaw") < 60
    assert "yaw" in page.text_content("#view-readout")

    # the tile geometry: nothing drawn until toggled
    page.evaluate("window.coraViewer.look(20, 10, 110)")
    assert _overlay_pixels(page) == 0
    page.check("#toggle-tiles")
    tiles_only = _overlay_pixels(page)
    page.check("#toggle-patches")
    assert 0 < tiles_only < _overlay_pixels(page)
    assert "e2p" in page.text_content("#geometry-note")
    page.screenshot(path=str(out / "serve-page-tiles.png"))

    # ask
    page.fill("#query", QUESTION)
    page.click("#ask")
    page.wait_for_function("document.getElementById('caption').textContent.length > 0", timeout=60_000)
    caption = page.text_content("#caption")
    want = captioner.caption([mars], QUESTION)[0].caption
    assert caption == (want or "(empty answer)")
    assert "ms on the server" in page.text_content("#elapsed")
    assert QUESTION in page.text_content("#answer-query")
    page.screenshot(path=str(out / "serve-page-answer.png"))
    assert not page.errors, page.errors


def test_bad_panorama_shows_the_reason(page: Any, server: str, captioner: Captioner, tmp_path: Path) -> None:
    square = tmp_path / "square.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(square)
    page.goto(server + "/")
    page.set_input_files("#file", str(square))
    page.wait_for_function("document.getElementById('status').textContent.includes('not 2:1')")
    assert page.get_attribute("#stage", "data-state") == "empty"
    assert page.is_disabled("#ask")
    # the server's own check, reached with a panorama the browser accepts but the server refuses
    buf = io.BytesIO()
    Image.new("RGB", (4000, 2000), (10, 120, 30)).save(buf, "PNG")
    big = tmp_path / "huge.png"
    big.write_bytes(buf.getvalue())
    with background_server(create_app(captioner, ServeSettings(max_pixels=1_000_000))) as url:
        page.goto(url + "/")
        page.set_input_files("#file", str(big))
        page.wait_for_selector("#stage[data-state=ready]")
        page.fill("#query", QUESTION)
        page.click("#ask")
        page.wait_for_function("document.getElementById('status').textContent.includes('413')")
        assert "over the limit of 1,000,000" in page.text_content("#status")
        page.screenshot(path=str(artifacts_dir() / "serve-page-413.png"))
