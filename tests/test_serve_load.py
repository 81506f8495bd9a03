"""A bounded load test on 127.0.0.1: 64 requests, 8 in flight, against a real uvicorn.

Asserts behaviour, not speed (speed lives in benchmarks/serve.py): every request answered
with the same caption the Python API gives, requests really batched, nothing refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="cora-kit serve needs the serve extra: pip install -e '.[serve]'")
import httpx  # noqa: E402

from cora_kit.serving import Captioner  # noqa: E402
from cora_kit.serving.server import ServeSettings, background_server, create_app  # noqa: E402

REQUESTS, IN_FLIGHT = 64, 8


async def _fire(url: str, files: list[Path], queries: list[str]) -> list[httpx.Response]:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        async with sem:
            f = files[i % len(files)]
            return await client.post("/v1/caption", files={"image": (f.name, f.read_bytes(), "image/png")},
                                     data={"query": queries[i % len(queries)]})

    async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:
        return await asyncio.gather(*(one(client, i) for i in range(REQUESTS)))


def _in_thread(coro):  # noqa: ANN001, ANN202
    """``asyncio.run`` on a fresh thread (the test thread may already hold an event loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_64_requests_8_in_flight(tiny_trained_run: Path) -> None:
    cap = Captioner.from_run(tiny_trained_run, device="cpu")
    files = sorted((tiny_trained_run.parent.parent / "synth" / "images").glob("test_*.png"))[:4]
    queries = ["what is above the horizon?", "where is the red cube?", "describe the scene"]
    app = create_app(cap, ServeSettings(max_batch=8, max_queue=16))
    with background_server(app) as url:
        assert url.startswith("http://127.0.0.1:")
        responses = _in_thread(_fire(url, files, queries))
    assert [r.status_code for r in responses] == [200] * REQUESTS
    want = {(f.name, q): c.caption for f in files for q in queries
            for c in cap.caption([f], q)}
    for i, r in enumerate(responses):
        body = r.json()
        assert body["caption"] == want[(files[i % len(files)].name, queries[i % len(queries)])]
        assert body["elapsed_ms"] > 0
    stats = app.state.batcher.stats
    assert stats.requests == REQUESTS and stats.failed == 0 and stats.dropped == 0
    assert 2 <= stats.largest_batch <= 8 and stats.batches < REQUESTS


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_cli_serves_until_interrupted(tiny_trained_run: Path) -> None:
    """``cora-kit serve --run`` as a user starts it: a real process, health, one caption, Ctrl-C."""
    import os
    import signal
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cora_kit", "serve", "--run", str(tiny_trained_run),
                             "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(url + "/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the server did not come up in 120 s"
                time.sleep(0.5)
        assert health["status"] == "ok" and health["model"]["source"] == str(tiny_trained_run)
        f = sorted((tiny_trained_run.parent.parent / "synth" / "images").glob("test_*.png"))[0]
        r = httpx.post(url + "/v1/caption", files={"image": (f.name, f.read_bytes(), "image/png")},
                       data={"query": "where is the red cube?"}, timeout=60)
        assert r.status_code == 200 and r.json()["query"] == "where is the red cube?"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"at http://127.0.0.1:{port}/" in out
