"""Batch-size search with a mocked out-of-memory step; the effective batch never changes."""

from __future__ import annotations

import pytest
import torch

from cora_kit.errors import ConfigError
from cora_kit.train.autobatch import (
    is_out_of_memory,
    largest_fitting_batch,
    plan_from_ram,
    plan_from_search,
    plan_split,
)


def _fake_gpu(capacity: int, calls: list[int]):
    def step(b: int) -> None:
        calls.append(b)
        if b > capacity:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    return step


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 8, 13, 50, 64, 1000])
def test_search_finds_the_largest_fitting_batch(capacity):
    calls: list[int] = []
    found = largest_fitting_batch(_fake_gpu(capacity, calls), upper=64)
    assert found == min(capacity, 64)
    assert len(calls) <= 2 * 7 + 1  # doubling + bisection, not a linear scan


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(ConfigError, match="even a batch of 1"):
        largest_fitting_batch(_fake_gpu(0, []), upper=8)


def test_other_errors_propagate():
    def step(b: int) -> None:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        largest_fitting_batch(step, upper=8)


def test_oom_recogniser():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))


@pytest.mark.parametrize("capacity", [1, 3, 5, 6, 9, 31, 32, 100])
def test_plan_keeps_the_effective_batch(capacity):
    cleared: list[int] = []
    plan = plan_from_search(4, 8, 2, _fake_gpu(capacity, []), on_oom=lambda: cleared.append(1))
    assert plan.effective == 4 * 8 * 2
    assert plan.micro_batch <= max(1, capacity)
    assert (4 * 8) % plan.micro_batch == 0
    if capacity < 32:
        assert cleared  # the OOM hook (torch.cuda.empty_cache) ran


def test_margin_applies_only_when_memory_is_the_limit():
    assert plan_from_search(4, 8, 1, _fake_gpu(1000, [])).micro_batch == 32
    assert plan_from_search(4, 8, 1, _fake_gpu(20, [])).micro_batch == 16  # 20 * 0.85 = 17 -> divisor 16


def test_cpu_rule_from_ram():
    plan = plan_from_ram(8, 1, 1, bytes_per_sample=2**30, available_bytes=10 * 2**30)
    assert plan.micro_batch == 4 and plan.grad_accum == 2 and plan.effective == 8
    assert "50%" in plan.rule
    with pytest.raises(ConfigError):
        plan_from_ram(8, 1, 1, bytes_per_sample=0, available_bytes=1)


def test_split_uses_divisors():
    assert plan_split(12, 5, 1, 5, "r").micro_batch == 4
    assert plan_split(7, 5, 1, 5, "r").micro_batch == 1


def test_saved_activation_bytes_scales_with_batch():
    from cora_kit.train.autobatch import saved_activation_bytes

    lin = torch.nn.Linear(64, 64)

    def step(b: int):
        return lambda: torch.tanh(lin(torch.randn(b, 64))).sum()

    one, four = saved_activation_bytes(step(1)), saved_activation_bytes(step(4))
    assert one > 0 and four > one


def test_run_with_batch_size_auto_records_the_choice(tmp_path, monkeypatch):
    """The real tiny pipeline on CPU: the RAM rule picks a micro-batch, the effective batch
    and the number of optimizer steps stay as configured, config.yaml records the split."""
    import yaml

    from cora_kit.cli import main
    from cora_kit.data.synth import ensure_synthetic

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "d"
    ensure_synthetic(data, n_train=8, n_val=2, n_test=2, size=(64, 128), seed=0)
    args = ["run", "--data", str(data), "--out", str(tmp_path / "runs"), "--name", "auto", "--stages", "1,2",
            "--batch-size", "auto", "--resampler", "mlp", "--loss", "none",
            "--set", "stages.stage1.max_steps=1", "--set", "stages.stage2.max_steps=1",
            "--set", "stages.stage2.batch_size=2", "--set", "stages.stage2.grad_accum=2",
            "--set", "eval.metrics=[cider]"]
    assert main(args) == 0
    cfg = yaml.safe_load((tmp_path / "runs" / "auto" / "config.yaml").read_text())
    assert cfg["auto_batch"] is True
    s2 = cfg["stages"]["stage2"]
    assert s2["batch_size"] * s2["grad_accum"] == 4
    assert main(["run", "--batch-size", "7"]) == 2
