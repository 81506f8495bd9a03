"""``cora_kit.device.resolve_device``: the one device resolver of training and serving."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cora_kit.config import resolve_config
from cora_kit.device import resolve_device
from cora_kit.errors import ConfigError

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def test_auto_and_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    assert resolve_device("meta") == torch.device("meta")
    for name in ("cuda", "cuda:0", "CUDA"):
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device(name)


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'gpu0' is not a device name"):
        resolve_device("gpu0")


def test_cuda_with_gpus_and_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)  # explicit index wins
    with pytest.raises(ConfigError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@needs_no_gpu
def test_training_and_serving_refuse_cuda_without_a_gpu(tmp_path: Path) -> None:
    """Both sides use the resolver: ``cuda`` on a CPU machine fails before anything runs."""
    from cora_kit.serving import load_run
    from cora_kit.train.engine import run

    from test_train_fake import fake_factory, make_splits

    cfg = resolve_config("tiny", None, ["device=cuda"])
    with pytest.raises(ConfigError, match="no CUDA device"):
        run(cfg, tmp_path / "r", model_factory=fake_factory, splits=make_splits(8, 2, 2), progress=False)
    assert not (tmp_path / "r").exists()
    (tmp_path / "fake-run").mkdir()
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_run(tmp_path / "fake-run", device="cuda")
