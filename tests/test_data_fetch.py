"""``cora-kit data fetch`` against a local HTTP server (127.0.0.1 only) with injected faults.

The server is started by the test in a thread; every request it sees is recorded, so the
tests can say how often a URL was asked for and with which Range header.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cora_kit.cli import main
from cora_kit.data.csv_loaders import load_split
from cora_kit.data.fetch import FetchOptions, fetch_dataset, url_file_stem

FAST = ["--timeout", "0.5", "--retries", "2", "--backoff", "0.01", "--workers", "4"]


def _image(w: int, h: int, seed: int, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


class FaultServer:
    """Serves ``files`` (path -> bytes) and faults by path; records (path, Range) per request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.flaky_left: Counter = Counter()  # path -> 503s still to send
        self.cut_once: set[str] = set()  # paths whose next response is cut in half
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path, rng = self.path, self.headers.get("Range")
                server.requests.append((path, rng))
                if path.startswith("/slow"):
                    server.release.wait(5)
                    return self._send(200, _image(64, 32, 9), "image/png")
                if path.startswith("/flaky") and server.flaky_left[path] > 0:
                    server.flaky_left[path] -= 1
                    return self._send(503, b"busy", "text/plain")
                if path.startswith("/page"):
                    return self._send(200, b"<!DOCTYPE html><html><body>Photo unavailable</body></html>", "text/html")
                body = server.files.get(path)
                if body is None:
                    return self._send(404, b"not found", "text/plain")
                if path.startswith("/cut") or path in server.cut_once:
                    server.cut_once.discard(path)
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                if rng and path.startswith("/ranged"):
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body) - start))
                    self.end_headers()
                    self.wfile.write(body[start:])
                    return None
                return self._send(200, body, "image/png")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # a client that hung up early
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    s = FaultServer()
    s.thread.start()
    try:
        yield s
    finally:
        s.release.set()
        s.httpd.shutdown()
        s.httpd.server_close()


def _write_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["url", "query", "annotation"])
        w.writerows(rows)


def _served_csv(s: FaultServer, path: Path, prefix: str, n: int, seed: int) -> Path:
    """``n`` 2:1 PNGs served at ``/<prefix><k>.png``, listed in the CSV ``path``."""
    for k in range(n):
        s.files[f"/{prefix}{k}.png"] = _image(64, 32, seed + k)
    _write_csv(path, [(s.url(f"/{prefix}{k}.png"), "q", f"a{k}") for k in range(n)])
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_fetch_with_faults_writes_a_dataset_folder(server, tmp_path, capsys):
    s = server
    s.files["/a/pano.jpg"] = _image(64, 32, 1, "JPEG")
    s.files["/b/pano.jpg"] = _image(64, 32, 2, "JPEG")  # same basename, another image
    s.files["/many.png"] = _image(80, 40, 3)
    s.files["/flaky.png"] = _image(64, 32, 4)
    s.flaky_left["/flaky.png"] = 2  # two 503s, then the image
    s.files["/cut.png"] = _image(64, 32, 5)  # always cut short
    s.files["/square.png"] = _image(32, 32, 6)  # decodes, not 2:1
    src = tmp_path / "src"
    src.mkdir()
    _write_csv(src / "train.csv", [
        (s.url("/a/pano.jpg"), "what is left?", "a red cube"),
        (s.url("/b/pano.jpg"), "what is left?", "a blue ball"),
        *[(s.url("/many.png"), "what is behind?", f"answer {k}") for k in range(6)],
        (s.url("/flaky.png"), "how many?", "two"),
        (s.url("/missing.png"), "q", "404 row"),
        (s.url("/page.jpg"), "q", "html row"),
        (s.url("/cut.png"), "q", "truncated row"),
        (s.url("/square.png"), "q", "square row"),
        (s.url("/slow.png"), "q", "timeout row"),
    ])
    _write_csv(src / "val.csv", [(s.url("/many.png"), "what is behind?", "val answer")])
    _write_csv(src / "test.csv", [(s.url("/a/pano.jpg"), "what is right?", "a tree")])
    out = tmp_path / "fetched"

    rc = main(["data", "fetch", str(src), "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert rc == 1, captured
    report = json.loads((out / "fetch-report.json").read_text())
    assert report["fetched"] == 4 and report["already_present"] == 0 and report["urls"] == 9
    reasons = {f["url"].removeprefix(s.base): f["reason"] for f in report["failed"]}
    assert set(reasons) == {"/missing.png", "/page.jpg", "/cut.png", "/square.png", "/slow.png"}
    assert "HTTP 404" in reasons["/missing.png"] and "not retried" in reasons["/missing.png"]
    assert "HTML" in reasons["/page.jpg"] and "text/html" in reasons["/page.jpg"]
    assert "cut short" in reasons["/cut.png"] and "3 attempts" in reasons["/cut.png"]
    assert "32x32 is not an equirectangular panorama" in reasons["/square.png"]
    assert "timed out" in reasons["/slow.png"] and "3 attempts" in reasons["/slow.png"]
    assert "failed: " + s.url("/missing.png") in captured.err

    # each distinct URL asked for once; 4xx never retried; 5xx, cut bodies, timeouts retried
    assert s.count("/many.png") == 1 and s.count("/a/pano.jpg") == 1
    assert s.count("/missing.png") == 1 and s.count("/page.jpg") == 1 and s.count("/square.png") == 1
    assert s.count("/flaky.png") == 3 and s.count("/cut.png") == 3 and s.count("/slow.png") == 3

    # files are named by the URL's hash, only complete checked images are kept
    names = sorted(p.name for p in (out / "images").iterdir() if not p.name.startswith("."))
    want = sorted(
        [url_file_stem(s.url(p)) + ".jpg" for p in ("/a/pano.jpg", "/b/pano.jpg")]
        + [url_file_stem(s.url(p)) + ".png" for p in ("/many.png", "/flaky.png")]
    )
    assert names == want
    a = (out / "images" / f"{url_file_stem(s.url('/a/pano.jpg'))}.jpg").read_bytes()
    assert a == s.files["/a/pano.jpg"] and a != s.files["/b/pano.jpg"]

    # CSVs: local paths, source_url kept, rows whose image failed left out
    train = _read_csv(out / "train.csv")
    assert len(train) == 9 and report["csvs"]["train.csv"] == {"rows": 14, "written": 9, "left_out": 5}
    assert {r["source_url"] for r in train} == {s.url(p) for p in ("/a/pano.jpg", "/b/pano.jpg", "/many.png", "/flaky.png")}
    for r in train:
        assert r["url"] == f"images/{url_file_stem(r['source_url'])}{Path(r['url']).suffix}"
    assert list(train[0]) == ["url", "query", "annotation", "source_url"]

    # the folder is a dataset: `data check` accepts it, the loader groups the repeated URL
    capsys.readouterr()
    assert main(["data", "check", str(out)]) == 0
    checked = capsys.readouterr().out
    assert "train.csv: 4 items from 9 rows" in checked and "val.csv" in checked and "test.csv" in checked
    loaded = load_split(out, "train")
    many = [x for x in loaded if x.url.endswith(url_file_stem(s.url("/many.png")) + ".png")]
    assert len(many) == 1 and len(many[0].references) == 6


def test_second_run_finds_everything_present(server, tmp_path, capsys):
    s = server
    src = _served_csv(s, tmp_path / "one.csv", "p", 3, seed=10)
    out = tmp_path / "out"
    assert main(["data", "fetch", str(src), "--out", str(out), *FAST]) == 0
    first = json.loads((out / "fetch-report.json").read_text())
    assert (first["fetched"], first["already_present"], first["failed"]) == (3, 0, [])
    n_requests = len(s.requests)
    assert main(["data", "fetch", str(src), "--out", str(out), *FAST]) == 0
    second = json.loads((out / "fetch-report.json").read_text())
    assert (second["fetched"], second["already_present"], second["failed"]) == (0, 3, [])
    assert len(s.requests) == n_requests  # nothing downloaded again
    assert "3 URLs: 0 fetched, 3 already present, 0 failed" in capsys.readouterr().out
    assert len(_read_csv(out / "one.csv")) == 3


def test_interrupted_fetch_resumes_with_a_range_request(server, tmp_path):
    s = server
    body = _image(256, 128, 20)
    s.files["/ranged/big.png"] = body
    s.cut_once.add("/ranged/big.png")  # the first transfer dies half-way
    src = tmp_path / "train.csv"
    _write_csv(src, [(s.url("/ranged/big.png"), "q", "a")])
    out = tmp_path / "out"
    opts = FetchOptions(workers=1, retries=0, timeout=1.0, backoff=0.0)
    first = fetch_dataset(src, out, opts)
    assert first.exit_code == 1 and "cut short" in first.failed[0]["reason"]
    stem = url_file_stem(s.url("/ranged/big.png"))
    part = out / "images" / f".{stem}.part"
    assert part.is_file() and part.stat().st_size == len(body) // 2  # kept for resuming ...
    assert not list((out / "images").glob(f"{stem}.*"))  # ... never under a final name
    assert _read_csv(out / "train.csv") == []

    second = fetch_dataset(src, out, opts)
    assert second.exit_code == 0 and second.fetched == 1
    assert s.requests[-1] == ("/ranged/big.png", f"bytes={len(body) // 2}-")
    assert (out / "images" / f"{stem}.png").read_bytes() == body
    assert second.bytes_downloaded == len(body) - len(body) // 2
    assert not part.exists() and len(_read_csv(out / "train.csv")) == 1


def test_a_stale_partial_is_restarted_whole(server, tmp_path):
    s = server
    body = _image(64, 32, 30)
    s.files["/ranged/x.png"] = body
    src = tmp_path / "train.csv"
    _write_csv(src, [(s.url("/ranged/x.png"), "q", "a")])
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / f".{url_file_stem(s.url('/ranged/x.png'))}.part").write_bytes(b"garbage from another file")
    report = fetch_dataset(src, out, FetchOptions(workers=1, retries=0, timeout=1.0))
    assert report.exit_code == 0, report.failed
    assert (out / "images" / f"{url_file_stem(s.url('/ranged/x.png'))}.png").read_bytes() == body


def test_bad_input_is_exit_2(tmp_path, capsys):
    assert main(["data", "fetch", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("image,query,annotation\nhttp://127.0.0.1:9/x.png,q,a\n")
    assert main(["data", "fetch", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing column 'url'" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["data", "fetch", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no dataset CSV" in capsys.readouterr().err
    good = tmp_path / "d"
    good.mkdir()
    _write_csv(good / "train.csv", [])
    assert main(["data", "fetch", str(good), "--out", str(good)]) == 2
    assert "another folder" in capsys.readouterr().err


def test_fetch_uses_the_one_2_1_tolerance_of_every_erp_reader(server, tmp_path):
    from cora_kit.data.images import ASPECT_TOLERANCE, check_erp
    from cora_kit.errors import DataError

    s = server
    s.files["/near.png"] = _image(129, 64, 40)  # 2.016: within 1%
    s.files["/far.png"] = _image(134, 64, 41)  # 2.094: not
    src = tmp_path / "train.csv"
    _write_csv(src, [(s.url("/near.png"), "q", "a"), (s.url("/far.png"), "q", "b")])
    report = fetch_dataset(src, tmp_path / "out", FetchOptions(workers=2, retries=0, timeout=2.0))
    assert ASPECT_TOLERANCE == 0.01 and report.fetched == 1
    assert [f["url"] for f in report.failed] == [s.url("/far.png")]
    kept = tmp_path / "out" / "images" / f"{url_file_stem(s.url('/near.png'))}.png"
    assert check_erp(kept).width == 129  # the loaders, training, captioning and tile accept what fetch kept
    far = tmp_path / "far.png"
    far.write_bytes(s.files["/far.png"])
    with pytest.raises(DataError, match="134x64"):
        check_erp(far)  # ... and refuse what it refused


def test_ctrl_c_stops_writes_the_report_and_keeps_no_partial_file(server, tmp_path):
    s = server
    src = _served_csv(s, tmp_path / "train.csv", "c", 6, seed=50)
    out = tmp_path / "out"
    done = []

    def progress(event: str, n: int) -> None:
        if event == "file":
            done.append(n)
            if len(done) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_dataset(src, out, FetchOptions(workers=1, retries=0, timeout=2.0), progress=progress)
    report = json.loads((out / "fetch-report.json").read_text())
    assert report["interrupted"] is True and report["fetched"] >= 1
    assert not (out / "train.csv").exists()  # no half-written dataset
    for p in (out / "images").iterdir():  # complete, checked files only under final names
        if not p.name.startswith("."):
            assert p.read_bytes() in s.files.values()
    again = fetch_dataset(src, out, FetchOptions(workers=2, retries=0, timeout=2.0))
    assert again.exit_code == 0 and again.already_present + again.fetched == 6 and again.already_present >= 1
