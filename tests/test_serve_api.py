"""``cora-kit serve``'s HTTP API in process (Starlette's TestClient): answers, limits,
status codes, the batching queue, auth, the geometry endpoint and the page's assets.

The real tiny model answers the captioning requests (and must agree with ``Captioner``);
a gated fake model makes the queue states (full, slow) happen on demand."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="cora-kit serve needs the serve extra: pip install -e '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

import cora_kit  # noqa: E402
from cora_kit.cli import main  # noqa: E402
from cora_kit.commands.serve import is_loopback  # noqa: E402
from cora_kit.geometry import view_outline  # noqa: E402
from cora_kit.serving import Captioner  # noqa: E402
from cora_kit.serving.server import STATIC, ServeSettings, create_app  # noqa: E402

QUERY = "what is above the horizon?"


def png(width: int, height: int, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), (40, 90, 160) if mode == "RGB" else 0).save(buf, fmt)
    return buf.getvalue()


def post(client: TestClient, data: bytes, query: str = QUERY, name: str = "pano.png", **kw: Any) -> Any:
    return client.post("/v1/caption", files={"image": (name, data, "image/png")}, data={"query": query}, **kw)


class GatedModel:
    """A stand-in model: each batch waits for ``gate``, then echoes the sizes and queries."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.fail = fail
        self.model = SimpleNamespace(layout=cora_kit.create("tiler", "e2p").layout, latent_grid=(4, 4))

    def describe(self) -> dict[str, Any]:
        return {"name": "gated", "source": "(test)", "kind": "fake"}

    def caption_erps(self, erps: list[torch.Tensor], queries: list[str]) -> list[str]:
        self.entered.set()
        assert self.gate.wait(20), "test gate never opened"
        if self.fail:
            raise RuntimeError("the model broke")
        self.batches.append(len(erps))
        return [f"{e.shape[-1]}x{e.shape[-2]} {e.dtype}: {q}" for e, q in zip(erps, queries, strict=True)]


@pytest.fixture(scope="module")
def captioner(tiny_trained_run: Path) -> Captioner:
    return Captioner.from_run(tiny_trained_run, device="cpu")


@pytest.fixture(scope="module")
def client(captioner: Captioner) -> Iterator[TestClient]:
    settings = ServeSettings(max_batch=4, max_upload_mb=0.5, max_pixels=2048 * 1024)
    with TestClient(create_app(captioner, settings)) as c:
        yield c


@pytest.fixture
def synth_pano(tiny_trained_run: Path) -> Path:
    return sorted((tiny_trained_run.parent.parent / "synth" / "images").glob("test_*.png"))[0]


def gated_client(model: GatedModel, **settings: Any) -> TestClient:
    return TestClient(create_app(model, ServeSettings(**settings)))


# --- answers -------------------------------------------------------------------------


def test_health_names_the_model(client: TestClient, tiny_trained_run: Path) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["model"]["source"] == str(tiny_trained_run) and body["model"]["resampler"] == "bimamba"
    assert body["queue"]["max_batch"] == 4


def test_caption_answers_like_the_python_api(client: TestClient, captioner: Captioner, synth_pano: Path) -> None:
    r = post(client, synth_pano.read_bytes(), query=f"  {QUERY} ")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"caption", "query", "elapsed_ms"}
    assert body["query"] == QUERY and body["elapsed_ms"] > 0 and body["batch_size"] == 1
    assert body["caption"] == captioner.caption([synth_pano], QUERY)[0].caption


def test_caption_of_the_real_mars_panorama(captioner: Captioner, real_panoramas: dict[str, Path]) -> None:
    with TestClient(create_app(captioner, ServeSettings())) as c:
        r = post(c, real_panoramas["mars"].read_bytes(), name="mars.png")
    assert r.status_code == 200, r.text
    assert r.json()["caption"] == captioner.caption([real_panoramas["mars"]], QUERY)[0].caption


# --- bad input: 4xx with a one-line detail, and the server goes on ------------------------


@pytest.mark.parametrize(
    ("make", "status", "pattern"),
    [
        (lambda: b"this is not an image", 415, r"bad\.png: cannot read image"),
        (lambda: png(300, 200), 422, r"300x200 is not an equirectangular panorama"),
        (lambda: png(400, 200, "LAB", "TIFF"), 415, r"mode LAB"),  # CMYK is converted (issue 18)
        (lambda: png(512, 256)[:200], 415, r"cannot read image"),
        (lambda: png(4096, 2048), 413, r"8,388,608 pixels, over the limit of 2,097,152"),
        (lambda: bytes(600 * 1024), 413, r"over the upload limit"),
    ],
    ids=["not-an-image", "not-2to1", "lab", "truncated", "too-many-pixels", "too-large"],
)
def test_bad_uploads(client: TestClient, make: Any, status: int, pattern: str) -> None:
    r = post(client, make(), name="bad.png")
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and re.search(pattern, detail), detail


def test_body_over_the_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    r = post(client, bytes(3 * 2**20), name="big.png")
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]


@pytest.mark.parametrize(
    ("request_kw", "status", "pattern"),
    [
        ({"files": {"image": ("p.png", png(64, 32), "image/png")}, "data": {"query": "   "}}, 422, "query is empty"),
        ({"files": {"image": ("p.png", png(64, 32), "image/png")}}, 422, "query is empty"),
        ({"data": {"query": QUERY, "image": "not a file"}}, 415, "multipart"),
        ({"files": {"other": ("p.png", png(64, 32), "image/png")}, "data": {"query": QUERY}}, 422, "field 'image'"),
        ({"files": {"image": ("p.png", png(64, 32), "image/png")}, "data": {"query": "x" * 501}}, 422, "at most 500"),
        ({"json": {"query": QUERY}}, 415, "multipart/form-data"),
    ],
    ids=["blank-query", "no-query", "urlencoded", "no-image", "long-query", "json"],
)
def test_bad_forms(client: TestClient, request_kw: dict, status: int, pattern: str) -> None:
    r = client.post("/v1/caption", **request_kw)
    assert r.status_code == status, r.text
    assert pattern in r.json()["detail"]


def test_server_keeps_serving_after_bad_requests(client: TestClient, synth_pano: Path) -> None:
    for data in (b"", b"\x89PNG\r\n\x1a\n" + bytes(100), png(10, 10)):
        assert post(client, data).status_code in (413, 415, 422)
    assert client.get("/health").json()["status"] == "ok"
    assert post(client, synth_pano.read_bytes()).status_code == 200


def test_model_error_is_a_500_and_the_worker_survives() -> None:
    model = GatedModel(fail=True)
    model.gate.set()
    with gated_client(model) as c:
        r = post(c, png(64, 32))
        assert r.status_code == 500 and r.json()["detail"] == "internal error (RuntimeError: the model broke)"
        model.fail = False
        assert post(c, png(64, 32)).status_code == 200


# --- the queue: batches, 503, 504 ---------------------------------------------------------


def test_waiting_requests_are_answered_in_one_batch() -> None:
    model = GatedModel()
    with gated_client(model, max_batch=4) as c, ThreadPoolExecutor(5) as pool:
        first = pool.submit(post, c, png(64, 32), "first")
        assert model.entered.wait(10)
        rest = [pool.submit(post, c, png(128, 64), f"q{i}") for i in range(4)]
        deadline = time.monotonic() + 10
        while c.app.state.batcher.pending < 4 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        model.gate.set()
        answers = [f.result().json() for f in rest]
        assert first.result().json()["caption"] == "64x32 torch.uint8: first"
    assert model.batches == [1, 4]
    assert [a["caption"] for a in answers] == [f"128x64 torch.uint8: q{i}" for i in range(4)]
    assert all(a["batch_size"] == 4 for a in answers)


def test_full_queue_is_503_then_the_queued_requests_finish() -> None:
    model = GatedModel()
    with gated_client(model, max_batch=1, max_queue=1) as c, ThreadPoolExecutor(2) as pool:
        running = pool.submit(post, c, png(64, 32), "running")
        assert model.entered.wait(10)
        queued = pool.submit(post, c, png(64, 32), "queued")
        deadline = time.monotonic() + 10
        while c.app.state.batcher.pending < 1 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        r = post(c, png(64, 32), "refused")
        assert r.status_code == 503 and "queue is full" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        model.gate.set()
        assert running.result().status_code == 200 and queued.result().status_code == 200


def test_request_past_its_time_limit_is_504() -> None:
    model = GatedModel()
    with gated_client(model, timeout_s=0.3) as c:
        r = post(c, png(64, 32))
        assert r.status_code == 504 and "time limit of 0.3 s" in r.json()["detail"]
        model.gate.set()
        assert c.get("/health").json()["status"] == "ok"


# --- auth ------------------------------------------------------------------------------------


def test_token_is_required_on_every_route() -> None:
    model = GatedModel()
    model.gate.set()
    token = "s3cret-token"
    with gated_client(model, token=token) as c:
        for method, path in [("get", "/"), ("get", "/health"), ("get", "/v1/geometry"), ("get", "/static/app.js"),
                             ("post", "/v1/caption"), ("get", "/nope")]:
            r = getattr(c, method)(path)
            assert r.status_code == 401, path
            assert "Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
            assert getattr(c, method)(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = {"Authorization": f"Bearer {token}"}
        assert c.get("/health", headers=ok).status_code == 200
        assert post(c, png(64, 32), headers=ok).status_code == 200
        # a browser: /?token=... once -> HttpOnly cookie, redirect to /
        assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
        r = c.get(f"/?token={token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        assert c.get("/").status_code == 200 and c.get("/health").status_code == 200  # the cookie


def test_loopback_only_without_a_token(capsys: pytest.CaptureFixture[str], tiny_trained_run: Path) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org"))
    assert main(["serve", "--run", str(tiny_trained_run), "--host", "0.0.0.0"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--host 0.0.0.0" in err and "--token" in err
    assert main(["serve", "--host", "127.0.0.1"]) == 2
    assert "exactly one of --run" in capsys.readouterr().err


# --- geometry and the page ----------------------------------------------------------------


def test_geometry_is_cora_kit_geometry(client: TestClient, captioner: Captioner) -> None:
    g = client.get("/v1/geometry").json()
    layout = captioner.model.layout
    assert g["layout"] == layout.name and g["grid"] == list(captioner.model.latent_grid)
    assert len(g["views"]) == layout.num_views
    tile = layout.tile_indices[0]
    lon, lat = view_outline(layout.views[tile], 32, layout.ray_spacing)
    got = torch.tensor(g["views"][tile]["outline"], dtype=torch.float64)
    torch.testing.assert_close(got, torch.stack([lon.rad2deg(), lat.rad2deg()], 1), atol=1e-3, rtol=0)
    # each tile matches its right-hand neighbour; every patch centre is inside both cells' span
    assert len(g["matches"]) == len(layout.tile_indices)
    assert all(m["patches"] for m in g["matches"])
    assert client.get("/v1/geometry?grid=16").json()["grid"] == [16, 16]
    assert client.get("/v1/geometry?grid=0").status_code == 422
    assert client.get("/v1/geometry?grid=abc").status_code == 422


def test_page_ships_every_asset(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
    assert {"/static/viewer.js", "/static/app.js", "/static/style.css"} <= set(assets)
    for a in assets:
        assert client.get(a).status_code == 200, a
    for f in STATIC.iterdir():  # no CDN, no remote font, nothing fetched from elsewhere
        assert not re.search(r'(?<!xmlns=")https?://', f.read_text(encoding="utf-8")), f.name
