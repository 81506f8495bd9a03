"""The stage lr schedules: the seed's warmup + cosine, and warmup-stable-decay (WSD)."""

from __future__ import annotations

import math

import pytest
import torch

from cora_kit.config import StageConfig, resolve_config
from cora_kit.train.stages import lr_factor, warmup_cosine, warmup_stable_decay


def test_cosine_warms_up_then_falls_to_zero():
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.0)


def test_wsd_holds_the_peak_then_decays_linearly_to_zero():
    f = warmup_stable_decay(100, 0.1, 0.2)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert all(f(s) == 1.0 for s in range(10, 81))
    assert f(85) == pytest.approx(0.75) and f(90) == pytest.approx(0.5)
    assert f(99) == pytest.approx(0.05) and f(100) == 0.0 and f(150) == 0.0


def test_wsd_decay_never_starts_inside_the_warmup():
    f = warmup_stable_decay(10, 0.5, 1.0)
    assert [round(f(s), 3) for s in range(10)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]


def test_the_stage_config_chooses_the_schedule():
    assert StageConfig().schedule == "cosine"
    cosine, wsd = lr_factor(StageConfig(), 200), lr_factor(StageConfig(schedule="wsd"), 200)
    assert cosine(100) < 0.6 and wsd(100) == 1.0
    cfg = resolve_config("tiny", None, ["stages.stage2.schedule=wsd", "stages.stage2.decay_ratio=0.5"])
    assert (cfg.stages.stage2.schedule, cfg.stages.stage2.decay_ratio) == ("wsd", 0.5)
    with pytest.raises(Exception, match="schedule"):
        resolve_config("tiny", None, ["stages.stage2.schedule=linear"])
    with pytest.raises(Exception, match="decay_ratio"):
        resolve_config("tiny", None, ["stages.stage2.decay_ratio=0"])


def test_an_optimizer_follows_the_wsd_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(StageConfig(schedule="wsd", warmup_ratio=0.0, decay_ratio=0.5), 4))
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 0.5, 0.5, 0.25])
