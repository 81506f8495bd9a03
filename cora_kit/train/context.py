"""What one run's stages share: the run context, stage/run results, seeding, autocast
(``cora_kit.device.autocast``: the precision rule of training, evaluation and captioning)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cora_kit.config import CoraConfig
from cora_kit.device import autocast  # the one precision rule (re-exported for the stage steps)
from cora_kit.errors import CoraKitError
from cora_kit.train.distributed import DistInfo
from cora_kit.train.run_dir import RunDir
from cora_kit.train.trackers import Trackers

#: ``on_step(stage, step, metrics)`` after every optimizer step
StepCallback = Callable[[int, int, dict[str, float]], None]


class NonFiniteLossError(CoraKitError, FloatingPointError):
    """A loss became NaN/Inf; the stage stopped, the last good checkpoint is kept."""

    def __init__(self, stage: int, step: int, value: float, checkpoint_step: int | None, note: str = "") -> None:
        kept = f"last good checkpoint: step {checkpoint_step}" if checkpoint_step else "no good checkpoint"
        super().__init__(f"stage {stage}: loss is {value} at step {step}; stopped ({kept}{'; ' + note if note else ''})")
        self.stage, self.step, self.value, self.checkpoint_step = stage, step, value, checkpoint_step


@dataclass
class StageResult:
    stage: int
    steps: int
    metrics: dict[str, float]
    trainable: dict[str, int]
    seconds: float
    resumed_from: int | None = None
    skipped: bool = False
    #: the validation metrics at the end of the stage's last epoch (val_loss, val_adj_cos, ...)
    validation: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    out_dir: Path
    stages: dict[int, StageResult] = field(default_factory=dict)
    diagnostics: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    seconds: float = 0.0
    #: ``encoder_image_passes`` (images through the frozen encoder prefix) and ``cache_hits``
    cache_stats: dict[str, int] = field(default_factory=dict)
    #: data-report.json: rows read, items and skipped rows per split
    data: dict[str, Any] = field(default_factory=dict)


#: ``validate(stage, epoch)`` -> metrics logged at an epoch end (``val_loss``, ``val_adj_cos`` ...)
Validator = Callable[[int, int], dict[str, float]]


@dataclass
class RunContext:
    """The run every stage, report and callback of one ``run()`` shares."""

    config: CoraConfig
    rd: RunDir
    dist: DistInfo
    device: torch.device
    cache_dir: Path
    progress: bool
    plain: bool
    on_step: StepCallback | None
    #: encoder_image_passes / cache_hits of every FeatureProvider of this run
    cache_stats: dict[str, int] = field(default_factory=dict)
    #: experiment trackers beside metrics.jsonl (rank 0; none elsewhere)
    trackers: Trackers = field(default_factory=Trackers.none)

    def say(self, *args: Any) -> None:
        """A progress line (rank 0, when progress output is on)."""
        if self.progress and self.dist.is_main:
            print(*args)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = [
    "NonFiniteLossError", "RunContext", "RunResult", "StageResult", "StepCallback", "Validator", "autocast", "seed_everything",
]
