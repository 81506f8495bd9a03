"""kill -9 at any moment of a run, then ``--resume``: the same scores.json (and weights,
metrics rows, diagnostics) as a run never interrupted (issue 18, case 1 and done-when).

Each case is a real child process (``tests/fault_driver.py``: the engine on the
FakeCoraModel) that sends itself SIGKILL at one precise point: in the middle of a file
write (a torn file or line), just before or just after a rename. The slow test kills the
real CLI on the tiny preset with SIGKILL from outside, at several moments of its run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_fake import fake_factory, make_splits, tiny_config

from cora_kit.train import checkpoint as ckpt
from cora_kit.train.engine import run

DRIVER = Path(__file__).resolve().parent / "fault_driver.py"
SETS = {"eval.metrics": "[sacrebleu]"}
STABLE = ("stage", "step", "epoch", "loss", "lr", "loss_mean")


def _config():
    return tiny_config(**SETS)


def _kill_child(out: Path, cache: Path, point: str) -> None:
    args = [sys.executable, str(DRIVER), str(out), "--cache", str(cache), "--kill", point]
    args += [f"--set={k}={v}" for k, v in SETS.items()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"{point}: the child was not killed there ({proc.returncode}):\n{proc.stderr}"


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same results: scores, final weights, metric rows, diagnostics."""
    assert json.loads((a / "scores.json").read_text()) == json.loads((b / "scores.json").read_text())
    for k in (1, 2, 3):
        wa, wb = ckpt.load_final(a / f"stage{k}"), ckpt.load_final(b / f"stage{k}")
        assert wa.keys() == wb.keys() and all((wa[n] == wb[n]).all() for n in wa), f"stage {k} weights differ"
    rows = lambda p: [{k: r[k] for k in STABLE if k in r}  # noqa: E731
                      for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())]
    assert rows(a) == rows(b)
    assert json.loads((a / "diagnostics.json").read_text()) == json.loads((b / "diagnostics.json").read_text())
    for name in ("predictions.jsonl", "references.jsonl"):
        assert (a / name).read_text() == (b / name).read_text()
    leftovers = [p for p in b.rglob(".*")]
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert not any(b.glob("stage*/checkpoint-*")), "finished stages keep their checkpoints"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("kill")
    cache = tmp / "cache"
    run(_config(), tmp / "reference", model_factory=fake_factory, splits=make_splits(), feature_cache_dir=cache,
        progress=False)
    return tmp / "reference", cache


#: where the child kills itself: KIND:PATTERN:N[:after] (see tests/fault_driver.py), and
#: what --resume must say about it
POINTS = {
    # the first checkpoint of stage 1: weights written, state.pt half written
    "mid-first-checkpoint": ("write:/stage1/.checkpoint-00000002:2",
                             "stage 1: no complete checkpoint in {out}/stage1 (an interrupted save was discarded);"
                             " the stage starts from step 0"),
    # half a metrics row (the torn last line --resume drops, with a warning)
    # (rows: stage 1 steps 1-6 and its validation row, then stage 2 step 1, 2, 3: the 10th write)
    "torn-metrics-row": ("write:metrics.jsonl:10", "stage 2: resumed at step 2/6 from {out}/stage2/checkpoint-00000002"),
    # stage 1 finished (done.json renamed), diagnostics.json not yet complete
    "after-stage1-done": ("replace:/stage1/done.json:1:after", None),
}
SLOW_POINTS = {
    # a complete checkpoint folder of stage 2, not yet renamed
    "checkpoint-before-rename": ("replace:/stage2/checkpoint-00000002:1", None),
    # a checkpoint of stage 3 renamed, the clean-up not yet done
    "checkpoint-after-rename": ("replace:/stage3/checkpoint-00000002:1:after", None),
    # stage 3's final weights half written
    "mid-final-weights": ("write:/stage3/.model.safetensors:1", None),
    # final weights of stage 3 renamed, done.json not yet
    "final-weights-no-marker": ("replace:/stage3/model.safetensors:1:after", None),
    # predictions written, scores.json half written
    "mid-scores": ("write:scores.json:1", None),
    # everything written but summary.md
    "before-summary": ("replace:summary.md:1", None),
}


def _kill_and_resume(tmp_path: Path, reference: tuple[Path, Path], point: str, said: str | None,
                     capsys: pytest.CaptureFixture[str]) -> None:
    ref, cache = reference
    out = tmp_path / "r"
    _kill_child(out, cache, point)
    torn = (out / "metrics.jsonl").is_file() and not (out / "metrics.jsonl").read_bytes().endswith(b"\n")
    with pytest.warns(RuntimeWarning, match="metrics.jsonl: dropped an incomplete last line") if torn else _no_warning():
        run(_config(), out, model_factory=fake_factory, splits=make_splits(), feature_cache_dir=cache, resume=True,
            progress=True, plain_progress=True)
    if said is not None:
        assert said.format(out=out) in capsys.readouterr().out
    assert_same_run(ref, out)


@contextlib.contextmanager
def _no_warning():
    yield


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_9_then_resume_gives_the_same_run(tmp_path: Path, reference: tuple[Path, Path], point: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _kill_and_resume(tmp_path, reference, *POINTS[point], capsys)


@pytest.mark.slow
@pytest.mark.parametrize("point", list(SLOW_POINTS))
def test_kill_9_then_resume_gives_the_same_run_more_points(tmp_path: Path, reference: tuple[Path, Path], point: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    _kill_and_resume(tmp_path, reference, *SLOW_POINTS[point], capsys)


def test_resume_names_the_checkpoint_it_continues_from(tmp_path: Path, reference: tuple[Path, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Two complete checkpoints on disk (the newer one's weights not yet proven by a finite
    loss): the newest is taken, and said."""
    ref, cache = reference
    out = tmp_path / "r"
    _kill_child(out, cache, "replace:/stage1/checkpoint-00000004:1:after")
    assert sorted(p.name for p in (out / "stage1").glob("checkpoint-*")) == ["checkpoint-00000002", "checkpoint-00000004"]
    run(_config(), out, model_factory=fake_factory, splits=make_splits(), feature_cache_dir=cache, resume=True,
        progress=True, plain_progress=True)
    assert f"stage 1: resumed at step 4/6 from {out / 'stage1' / 'checkpoint-00000004'}" in capsys.readouterr().out
    assert_same_run(ref, out)


# --- the real CLI, killed from outside ----------------------------------------------------


def _cli(out_root: Path, data: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cora_kit", "run", "--out", str(out_root), "--name", "r", "--plain",
            "--feature-cache", str(cache),
            "--set", f"data.synth_dir={data}", "--set", "data.synth.n_train=8", "--set", "data.synth.n_val=2",
            "--set", "data.synth.n_test=4", "--set", "stages.stage1.max_steps=4", "--set", "stages.stage2.max_steps=4",
            "--set", "stages.stage3.max_steps=4", "--set", "stages.stage1.checkpoint_every=1",
            "--set", "stages.stage2.checkpoint_every=1", "--set", "stages.stage3.checkpoint_every=1",
            "--set", "stages.stage1.log_every=1", "--set", "stages.stage2.log_every=1",
            "--set", "stages.stage3.log_every=1", "--set", "eval.metrics=[bleu4,cider]",
            "--set", "eval.max_new_tokens=4", "--set", "device=cpu", *extra]


@pytest.mark.slow
def test_cli_killed_at_several_moments_resumes_to_the_same_scores(tmp_path: Path) -> None:
    """``cora-kit run`` on the tiny preset, SIGKILLed from outside at 15%..95% of its
    uninterrupted wall time (each kill a new attempt of the same run), then --resume."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    data, cache = tmp_path / "synth", tmp_path / "cache"
    t0 = time.monotonic()
    subprocess.run(_cli(tmp_path / "ref", data, cache), check=True, capture_output=True, env=env, timeout=900)
    wall = time.monotonic() - t0
    out_root = tmp_path / "cut"
    kills = 0
    for frac in (0.15, 0.35, 0.55, 0.75, 0.95):
        extra = ["--resume"] if (out_root / "r").exists() else []
        proc = subprocess.Popen(_cli(out_root, data, cache, *extra), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        try:
            proc.wait(timeout=frac * wall)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 3, f"only {kills} attempts were still running when killed"
    proc = subprocess.run(_cli(out_root, data, cache, "--resume"), capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    ref, cut = tmp_path / "ref" / "r", out_root / "r"
    assert json.loads((ref / "scores.json").read_text()) == json.loads((cut / "scores.json").read_text())
    assert (ref / "predictions.jsonl").read_text() == (cut / "predictions.jsonl").read_text()
    assert json.loads((ref / "diagnostics.json").read_text()) == json.loads((cut / "diagnostics.json").read_text())
