"""Issue 18, cases 5 (CSV decoding), 6 (disk full, permission denied, read-only) and 7 (java
orphans, very long captions); NaN stops are in test_train_engine.py.

Disk full is tested two ways: for real on a small tmpfs (when this process may mount one:
root, as in the project's containers; skipped otherwise) and by making cora-kit's one
write path (``cora_kit.fs._write_all``) fail with ENOSPC, which runs everywhere."""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from test_train_fake import fake_factory, make_splits, tiny_config

from cora_kit import fs
from cora_kit.cli import main
from cora_kit.data.csv_loaders import load_split
from cora_kit.errors import DataError, StorageError
from cora_kit.train import checkpoint as ckpt
from cora_kit.train.engine import run

STABLE = ("stage", "step", "epoch", "loss", "lr", "loss_mean")


# --- case 5: a non-UTF-8 byte costs its own row only, named by its true line ---------------


def _csv_with_bad_byte(tmp: Path, n: int = 200, bad_line: int = 50) -> Path:
    img = tmp / "pano.png"
    Image.new("RGB", (64, 32), (10, 20, 30)).save(img)
    lines = ["url,query,annotation"] + [f"pano.png,query {i},answer number {i}" for i in range(2, n + 2)]
    data = "\n".join(lines).encode() + b"\n"
    out = bytearray()
    for k, line in enumerate(data.split(b"\n"), start=1):
        if k == bad_line:
            line = line.replace(b"answer", b"answ\xffer")
        out += line + b"\n"
    path = tmp / "train.csv"
    path.write_bytes(bytes(out[:-1]))
    return path


def test_non_utf8_byte_skips_only_its_row_and_names_its_line(tmp_path: Path) -> None:
    path = _csv_with_bad_byte(tmp_path)
    report = load_split(path, on_bad_row="skip")
    assert report.num_rows == 199 and len(report) == 199
    assert dict(report.skipped) == {"not UTF-8": 1}
    assert report.problems == [f"{path}: row 50: field 3 is not valid UTF-8 (byte 0xff at character 5)"]
    assert {s.rows[0] for s in report} == set(range(2, 202)) - {50}
    with pytest.raises(DataError, match=r"train.csv: row 50: field 3 is not valid UTF-8"):
        load_split(path)


# --- case 6: disk full, permission denied, read-only --------------------------------------


def _run(tmp: Path, out: Path, **kw):
    config = kw.pop("config", tiny_config(**{"eval.metrics": "[sacrebleu]"}))
    return run(config, out, model_factory=fake_factory, splits=make_splits(), feature_cache_dir=tmp / "cache",
               progress=False, **kw)


def _same_results(a: Path, b: Path) -> None:
    assert json.loads((a / "scores.json").read_text()) == json.loads((b / "scores.json").read_text())
    for k in (1, 2, 3):
        wa, wb = ckpt.load_final(a / f"stage{k}"), ckpt.load_final(b / f"stage{k}")
        assert all((wa[n] == wb[n]).all() for n in wa), f"stage {k} differs"
    rows = lambda p: [{k: r[k] for k in STABLE if k in r}  # noqa: E731
                      for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())]
    assert rows(a) == rows(b)


def _intact(out: Path) -> None:
    """Whatever the failed run left verifies: finished stages, checkpoints, whole metric rows."""
    for k in (1, 2, 3):
        d = out / f"stage{k}"
        if ckpt.is_done(d):
            ckpt.load_final(d)
        elif ckpt.find_checkpoint(d) is not None:
            ckpt.load_checkpoint(d)
    if (out / "metrics.jsonl").is_file():
        text = (out / "metrics.jsonl").read_text()
        assert text == "" or text.endswith("\n")  # whole rows only
        [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    _run(tmp, tmp / "r")
    return tmp / "r"


@pytest.mark.parametrize("where,named", [
    ("stage2/.checkpoint-", "stage2/checkpoint-00000002/weights.safetensors"),
    ("metrics.jsonl", "metrics.jsonl"),
    ("stage1/.model.safetensors", "stage1/model.safetensors"),
])
def test_disk_full_is_one_error_naming_the_path_and_resume_completes(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, where: str, named: str
) -> None:
    real = fs._write_all

    def full(fd: int, data) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if where in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(fs, "_write_all", full)
    out = tmp_path / "r"
    with pytest.raises(StorageError, match=rf"^no space left on device: {out / named}") as err:
        _run(tmp_path, out)
    assert "\n" not in str(err.value)
    _intact(out)
    monkeypatch.setattr(fs, "_write_all", real)  # space again
    _run(tmp_path, out, resume=True)
    _same_results(reference, out)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root; the monkeypatched disk-full test covers this case")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_real_disk_full_on_a_small_tmpfs(tmp_path: Path, reference: Path) -> None:
    """A real ENOSPC: the run folder on a tmpfs with a filler file leaving about half of
    what the run writes; after the filler is deleted, --resume ends as an uninterrupted run."""
    need = sum(f.stat().st_size for f in reference.rglob("*") if f.is_file())
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        filler = disk / "filler"
        with open(filler, "wb") as fh:  # fill the tmpfs completely, then give back a budget
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        os.truncate(filler, max(filler.stat().st_size - need // 2, 0))
        out = disk / "r"
        with pytest.raises(StorageError, match=r"^no space left on device: " + str(disk)):
            _run(tmp_path, out)
        _intact(out)
        filler.unlink()
        _run(tmp_path, out, resume=True)
        _same_results(reference, out)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[str]:
    """``path`` made read-only for this process: a read-only tmpfs (root) or chmod 555."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        with _tmpfs(path, "1m"):
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
            yield "read-only file system"
    else:
        path.chmod(0o555)
        try:
            yield "permission denied"
        finally:
            path.chmod(0o755)


def test_read_only_run_folder_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _read_only(tmp_path / "ro") as reason:
        with pytest.raises(StorageError, match=rf"^{reason}: {tmp_path / 'ro'}"):
            _run(tmp_path, tmp_path / "ro" / "r")
        assert main(["data", "synth", "--out", str(tmp_path / "ro" / "synth"), "--n-train", "2", "--n-val", "1",
                     "--n-test", "1", "--size", "16x32"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {reason}: {tmp_path / 'ro'}") and len(err.strip().splitlines()) == 1


def test_read_only_caption_out_is_one_line_naming_it(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pano = sorted((tiny_run.parent.parent / "synth" / "images").glob("*.png"))[0]
    with _read_only(tmp_path / "ro") as reason:
        target = tmp_path / "ro" / "captions.jsonl"
        assert main(["caption", str(pano), "--run", str(tiny_run), "--out", str(target)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {reason}: {target}" in err and "Traceback" not in err


def test_permission_denied_is_one_line_naming_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES where this process may write anywhere (root): simulated on the write path."""
    def denied(fd: int, data) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(fs, "_write_all", denied)
    with pytest.raises(StorageError, match=rf"^permission denied: {tmp_path / 'r'}"):
        _run(tmp_path, tmp_path / "r")


def test_unhandled_os_error_of_the_machine_is_one_line_in_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Any ENOSPC/EACCES/EROFS that escapes a command is one line naming the path."""
    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.png"))

    monkeypatch.setattr("cora_kit.data.synth.generate_synthetic", boom)
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--n-train", "1", "--n-val", "1", "--n-test", "1",
                 "--size", "16x32"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: no space left on device: {tmp_path / 'x.png'}"


# --- case 7: java does not outlive a killed eval; very long captions are capped -------------


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_eval_leaves_no_java_behind(tmp_path: Path) -> None:
    from cora_kit_builtins.metrics.java import find_java

    if find_java() is None:
        pytest.skip("no java here")
    preds, refs = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "prediction": f"a red cube number {i}"}) + "\n" for i in range(300)))
    refs.write_text("".join(json.dumps({"id": i, "references": ["a red cube", "the cube"]}) + "\n" for i in range(300)))
    child = subprocess.Popen([sys.executable, "-m", "cora_kit", "eval", "-p", str(preds), "-r", str(refs),
                              "-m", "meteor,cider"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    java: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not java and time.monotonic() < deadline and child.poll() is None:
            java = [p for p in _children(child.pid) if "java" in _cmdline(p)]
            time.sleep(0.02)
        assert java, "eval started no java process"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_running(p) for p in java) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in java if _running(p)]
        assert not left, f"java outlived the killed eval: {[_cmdline(p) for p in left]}"
    finally:
        for p in java:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
            child.wait()


def test_very_long_captions_are_truncated_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cora_kit.eval.scoring import MAX_CAPTION_CHARS, score

    long = "a red cube " * 10_000  # 110,000 characters
    preds = {"0": long, "1": "a blue sphere"}
    refs = {"0": ["a red cube"], "1": ["a blue sphere", "the sphere"]}
    with pytest.warns(RuntimeWarning, match=rf"1 prediction\(s\).*longer than {MAX_CAPTION_CHARS} characters"):
        report = score(preds, refs, ["bleu4", "rouge_l", "cider"])
    assert report.truncated == {"max_chars": MAX_CAPTION_CHARS, "predictions": 1, "references": 0, "ids": ["0"]}
    assert report.to_json()["truncated"]["predictions"] == 1
    same = score({"0": long[:MAX_CAPTION_CHARS], "1": "a blue sphere"}, refs, ["bleu4", "rouge_l", "cider"])
    assert report.values == same.values and not same.truncated
    p, r = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps({"id": k, "prediction": v}) + "\n" for k, v in preds.items()))
    r.write_text("".join(json.dumps({"id": k, "references": v}) + "\n" for k, v in refs.items()))
    assert main(["eval", "-p", str(p), "-r", str(r), "-m", "rouge_l", "--max-chars", "50", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["truncated"]["max_chars"] == 50
    assert "truncated before scoring" in captured.err


def test_csv_writer_roundtrip_unchanged(tmp_path: Path) -> None:
    """Valid UTF-8 (accents, quotes, embedded newlines) still loads as before."""
    img = tmp_path / "pano.png"
    Image.new("RGB", (64, 32)).save(img)
    path = tmp_path / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["url", "query", "annotation"])
        w.writerow(["pano.png", "où est le cube ?", 'il est "là"\nà gauche'])
        w.writerow(["pano.png", "q2", "a2"])
    report = load_split(path)
    assert [s.references[0] for s in report] == ['il est "là"\nà gauche', "a2"]
    assert [s.rows for s in report] == [(3,), (4,)]
