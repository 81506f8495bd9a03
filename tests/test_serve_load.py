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


def test_64_requests_8_in_flight(tiny_trained_run: Path) -> None:
    cap = Captioner.from_run(tiny_trained_run, device="cpu")
    files = sorted((tiny_trained_run.parent.parent / "synth" / "images").glob("test_*.png"))[:4]
    queries = ["what is above the horizon?", "where is the red cube?", "describe the scene"]
    app = create_app(cap, ServeSettings(max_batch=8, max_queue=16))
    with background_server(app) as url:
        assert url.startswith("http://127.0.0.1:")
        responses = asyncio.run(_fire(url, files, queries))
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
