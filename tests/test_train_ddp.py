"""DDP with gloo: 2 CPU processes under torchrun train a few steps; the ranks' weights stay
identical and only rank 0 writes the run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HARNESS = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from test_train_fake import fake_factory, make_splits, tiny_config
    from cora_kit import fs
    from cora_kit.train import checkpoint, run_dir
    from cora_kit.train.engine import run

    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    written = []
    orig_file, orig_dir, orig_log = fs._mkstemp, checkpoint.atomic_dir, run_dir.RunDir.log_metrics
    def spy_file(path):  # every atomic file write (fs.atomic_write_bytes, fs.atomic_write)
        written.append(str(path))
        return orig_file(path)
    def spy_dir(path):  # checkpoint folders
        written.append(str(path))
        return orig_dir(path)
    def spy_log(self, row):
        if self.writer:
            written.append(str(self.metrics))
        return orig_log(self, row)
    fs._mkstemp = spy_file
    checkpoint.atomic_dir = spy_dir
    run_dir.RunDir.log_metrics = spy_log
    models = []
    def factory(config, device):
        models.append(fake_factory(config, device))
        return models[-1]
    cfg = tiny_config(**{"stages.stage3.max_steps": 2})
    run(cfg, out / "run", stages=(1, 2, 3), splits=make_splits(32, 8, 8), model_factory=factory,
        feature_cache_dir=out / "cache", progress=False, evaluate=False)
    m = models[0]
    save_file({n: p.detach().contiguous() for n, p in m.named_parameters()}, str(out / f"rank{rank}.safetensors"))
    (out / f"written{rank}.json").write_text(json.dumps(written))
    """
)


def test_two_gloo_processes_stay_identical_and_rank0_writes(tmp_path: Path) -> None:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CORA_KIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "0",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", str(script), str(tmp_path), tests_dir]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between ranks"
    init = load_file(str(tmp_path / "run" / "stage1" / "model.safetensors"))
    assert init  # rank 0 wrote the checkpoints
    run_dir = str(tmp_path / "run")  # rank 1 writes its share of the shared feature cache, nothing of the run
    assert [p for p in json.loads((tmp_path / "written1.json").read_text()) if p.startswith(run_dir)] == []
    written0 = json.loads((tmp_path / "written0.json").read_text())
    assert any(p.endswith("config.yaml") for p in written0)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["stage"], r["step"]) for r in rows if "loss" in r]  # training rows
    assert len(steps) == len(set(steps))  # one writer: no duplicated rows
    val = [(r["stage"], r["step"]) for r in rows if "val_loss" in r or "val_adj_cos" in r]
    assert len(val) == len(set(val)) == 3  # rank 0 validates at each epoch end, once per stage here
    # the effective batch is kept: each rank takes half of every batch of 4 (micro-batch 2),
    # so Stage 1 runs the one-process schedule: 32 images / batch 4 = 8 steps, capped at 6
    assert max(s for st, s in steps if st == 1) == 6


@pytest.mark.skipif(not hasattr(torch.distributed, "is_available") or not torch.distributed.is_available(),
                    reason="torch.distributed not available")
def test_distributed_setup_is_a_noop_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from cora_kit.train.distributed import setup

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = setup("cpu")
    assert not info.enabled and info.is_main
