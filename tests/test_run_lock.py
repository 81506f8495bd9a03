"""One writer per run folder (issue 18, case 4): a second run on a folder that a live run is
writing exits 2 at once naming the holder; a lock left by a killed run is taken over.
The holders are real child processes (``tests/fault_driver.py``)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_train_fake import fake_factory, make_splits, tiny_config

from cora_kit.cli import main
from cora_kit.errors import RunLockedError
from cora_kit.train.engine import run

DRIVER = Path(__file__).resolve().parent / "fault_driver.py"


def _start(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), str(out), "--cache", str(cache), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(out: Path, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    lock = out / "run.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            holder = json.loads(lock.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        if holder.get("pid") == proc.pid:
            return holder
        time.sleep(0.05)
    raise AssertionError("the child never took the lock")


def test_second_run_on_a_live_folder_exits_2_at_once_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "same"
    go = tmp_path / "go"
    child = _start(out, tmp_path / "cache", "--hold-until", str(go), "--set", "eval.metrics=[sacrebleu]")
    try:
        _wait_for_lock(out, child)
        synth = tmp_path / "synth-of-the-second-run"
        rc = main(["run", "--out", str(out.parent), "--name", "same", "--seed", "7", "--set", "device=cpu",
                   "--set", f"data.synth_dir={synth}"])
        err = " ".join(capsys.readouterr().err.split())
        assert rc == 2
        assert f"pid {child.pid} on host {socket.gethostname()}" in err and "fault_driver.py" in err
        assert "Traceback" not in err
        assert not synth.exists()  # it stopped at once: no data prepared, no model built
        with pytest.raises(RunLockedError, match=str(child.pid)):  # the Python API too, with --resume
            run(tiny_config(), out, model_factory=fake_factory, splits=make_splits(), resume=True,
                feature_cache_dir=tmp_path / "cache", progress=False)
        go.touch()
        assert child.wait(timeout=300) == 0, child.communicate()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # the first run is intact: its own config (seed 0), its scores, no lock left behind
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0
    assert (out / "scores.json").is_file() and not (out / "run.lock").exists()


def test_lock_of_a_killed_run_is_taken_over_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    child = _start(out, tmp_path / "cache", "--hold-until", str(tmp_path / "never"), "--set", "eval.metrics=[sacrebleu]")
    try:
        _wait_for_lock(out, child)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert json.loads((out / "run.lock").read_text())["pid"] == child.pid  # left behind by kill -9
    run(tiny_config(**{"eval.metrics": "[sacrebleu]"}), out, model_factory=fake_factory, splits=make_splits(),
        resume=True, feature_cache_dir=tmp_path / "cache", progress=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "took over the lock of a run that ended without releasing it" in err and f"pid {child.pid}" in err
    assert (out / "scores.json").is_file() and not (out / "run.lock").exists()


def test_lock_without_flock_uses_pid_and_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File systems without flock: a live local holder locks, a dead one is stale."""
    import fcntl

    from cora_kit.train.lock import RunLock

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with pytest.warns(RuntimeWarning, match="no flock"):
        first = RunLock(tmp_path).acquire()
    with pytest.warns(RuntimeWarning), pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    first.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with pytest.warns(RuntimeWarning):
        lock = RunLock(tmp_path).acquire()
    assert lock.stale is not None and lock.stale["pid"] == int(dead.stdout)
    lock.release()
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 1, "host": "another-host"}))
    with pytest.warns(RuntimeWarning), pytest.raises(RunLockedError, match="another-host"):
        RunLock(tmp_path).acquire()


def test_in_process_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    from cora_kit.train.lock import RunLock

    with RunLock(tmp_path) as lock:
        assert lock.held and lock.stale is None
        with pytest.raises(RunLockedError, match="another cora-kit run is writing this folder"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / "run.lock").exists()
    with RunLock(tmp_path) as again:
        assert again.held and again.stale is None
