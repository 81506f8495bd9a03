"""A tiny stand-in for ``cora_kit.pipeline.CoraModel`` (same methods, seconds to train),
so the engine's tests do not depend on model sizes; plus checks of the stand-in itself.

Images are 16x32 ERPs of one dominant colour; the answer is that colour's name, so a
model that looks at the panorama can learn it and a blank / shuffled one cannot.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cora_kit.config import CoraConfig, StageConfig, resolve_config
from cora_kit.errors import CheckpointError
from cora_kit.geometry import TileLayout, ViewCamera, overlap_correspondences
from cora_kit.overlap import matched_features
from cora_kit.train.data import Splits

COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.1), "blue": (0.1, 0.1, 0.9), "yellow": (0.9, 0.9, 0.1)}
WORDS = list(COLOURS)


def _digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class FakeResampler(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class FakeCoraModel(nn.Module):
    """Views 8x8, grid 4x4 (P=16), Dv=D=8; 1 global view + 4 tiles (FOV 120, stride 90)."""

    def __init__(self, config: CoraConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config
        self.layout = TileLayout(
            (ViewCamera(0, 0, 360, 8, True, "erp"),) + tuple(ViewCamera(y, 0, 120, 8) for y in (0, 90, 180, 270))
        )
        self.grid = (4, 4)
        self.latent_grid = (4, 4)
        self.correspondences = overlap_correspondences(self.layout, self.grid)
        d = 8
        self.patch = nn.Linear(12, d)
        self.block1 = nn.Linear(d, d)
        self.block2 = nn.Linear(d, d)
        self.resampler = FakeResampler(d)
        self.overlap_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.projector = nn.Linear(d, 16)
        self.llm = nn.Linear(16, len(WORDS))
        self.lora_a = nn.Parameter(torch.zeros(16, 2))
        self.lora_b = nn.Parameter(torch.zeros(2, len(WORDS)))
        self.fail_at_call: int | None = None  # tests: make lm/overlap loss NaN from this call on
        self.fail_once = False  # tests: ... at that call only (a bad batch, not bad weights)
        self._calls = 0
        self.to(device)

    @classmethod
    def from_config(cls, config: CoraConfig, device: torch.device | str = "cpu") -> FakeCoraModel:
        return cls(config, device)

    # --- encoder -----------------------------------------------------------------------
    def tile(self, erp: torch.Tensor) -> torch.Tensor:
        if erp.dtype == torch.uint8:  # the Tiler contract: uint8 or float in [0,1]
            erp = erp.float() / 255
        b = erp.shape[0]
        glob = F.interpolate(erp, size=(8, 8), mode="bilinear", align_corners=False)
        views = [glob]
        w = erp.shape[-1]
        for k in range(4):
            rolled = torch.roll(erp, shifts=-k * w // 4, dims=-1)[..., : w // 3 + 1]
            views.append(F.interpolate(rolled, size=(8, 8), mode="bilinear", align_corners=False))
        return torch.stack(views, 1).reshape(b, 5, 3, 8, 8)

    def _patchify(self, views: torch.Tensor) -> torch.Tensor:
        b, v = views.shape[:2]
        x = views.reshape(b * v, 3, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, v, 16, 12)
        return self.patch(x)

    def encoder_cache_key(self, stage: int) -> str:
        frozen = [self.patch.weight, self.patch.bias, self.block1.weight, self.block1.bias]
        if stage >= 2:
            frozen += [self.block2.weight, self.block2.bias]
        return f"fake-encoder|stage{1 if stage == 1 else 2}|{_digest(*frozen)}"

    def encode_frozen(self, views: torch.Tensor, stage: int) -> torch.Tensor:
        h = torch.tanh(self.block1(self._patchify(views)))
        return h if stage == 1 else torch.tanh(self.block2(h))

    def encode_trainable(self, hidden: torch.Tensor, stage: int) -> torch.Tensor:
        return torch.tanh(self.block2(hidden)) if stage == 1 else hidden

    def resample(self, feats: torch.Tensor) -> torch.Tensor:
        return self.resampler(feats)

    # --- losses ------------------------------------------------------------------------
    def _maybe_fail(self, loss: torch.Tensor) -> torch.Tensor:
        self._calls += 1
        at = self.fail_at_call
        if at is not None and (self._calls == at or (self._calls > at and not self.fail_once)):
            return loss * float("nan")
        return loss

    def overlap_loss(self, latent: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        idx = self.correspondences.view_indices
        tiles = latent[:, idx] if latent.shape[1] == self.layout.num_views else latent
        head = self.overlap_head(tiles)
        src, dst = matched_features(head, self.correspondences, self.grid)
        inv = F.mse_loss(src, dst)
        std = head.reshape(-1, head.shape[-1]).std(0)
        var = F.relu(1.0 - std).mean()
        return self._maybe_fail(inv + var), {"inv": float(inv.detach()), "var": float(var.detach())}

    def _logits(self, latent: torch.Tensor) -> torch.Tensor:
        z = self.projector(latent.mean(2).mean(1))
        return self.llm(z) + z @ self.lora_a @ self.lora_b

    def lm_loss(self, latent: torch.Tensor, queries: list[str], answers: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        # the colour word of each answer ("red panorama", or the paraphrase "a red panorama")
        target = torch.tensor([next(WORDS.index(w) for w in a.split() if w in WORDS) for a in answers], device=latent.device)
        loss = F.cross_entropy(self._logits(latent), target)
        return self._maybe_fail(loss), {"ce": float(loss.detach())}

    @torch.no_grad()
    def generate(self, latent: torch.Tensor, queries: list[str], max_new_tokens: int = 32, num_beams: int = 1) -> list[str]:
        return [f"{WORDS[i]} panorama" for i in self._logits(latent).argmax(-1).tolist()]

    # --- freeze schedule ---------------------------------------------------------------
    def _groups(self, stage: int) -> dict[str, list[nn.Parameter]]:
        if stage == 1:
            return {"encoder_last_blocks": list(self.block2.parameters()),
                    "resampler": list(self.resampler.parameters()), "overlap_head": list(self.overlap_head.parameters())}
        if stage == 2:
            return {"resampler": list(self.resampler.parameters()), "projector": list(self.projector.parameters())}
        return {"lora": [self.lora_a, self.lora_b], "projector": list(self.projector.parameters())}

    def set_stage(self, stage: int) -> dict[str, int]:
        for p in self.parameters():
            p.requires_grad_(False)
        groups = self._groups(stage)
        for ps in groups.values():
            for p in ps:
                p.requires_grad_(True)
        return {k: sum(p.numel() for p in ps) for k, ps in groups.items()}

    def param_groups(self, stage: int, cfg: StageConfig) -> list[dict]:
        out = []
        for name, ps in self._groups(stage).items():
            scale = cfg.resampler_lr_scale if name == "resampler" and stage == 2 else 1.0
            out.append({"params": ps, "lr": cfg.lr * scale, "name": name})
        return out

    def trainable_state_dict(self, stage: int) -> dict[str, torch.Tensor]:
        ids = {id(p) for ps in self._groups(stage).values() for p in ps}
        return {n: p.detach().clone() for n, p in self.named_parameters() if id(p) in ids}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        own = dict(self.named_parameters())
        for name, t in state.items():
            if name not in own:
                raise CheckpointError(f"checkpoint parameter '{name}' does not exist in the model")
            if tuple(t.shape) != tuple(own[name].shape):
                raise CheckpointError(f"parameter '{name}': checkpoint shape {list(t.shape)} != model {list(own[name].shape)}")
        with torch.no_grad():
            for name, t in state.items():
                own[name].copy_(t)

    def weights_fingerprint(self) -> str:
        return _digest(*(p for _, p in sorted(self.named_parameters())))

    def plugin_metadata(self) -> dict:
        return {"resampler": {"name": "fake", "distribution": "tests", "version": "0", "backend": "torch"}}


def make_image(colour: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(COLOURS[colour]).view(3, 1, 1)
    return (base * 0.8 + 0.2 * torch.rand(3, 16, 32, generator=g)).clamp(0, 1)


def make_splits(n_train: int = 32, n_val: int = 8, n_test: int = 8) -> Splits:
    def items(split: str, n: int, offset: int) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            colour = WORDS[(i * 7 + offset) % len(WORDS)]
            erp = make_image(colour, offset * 1000 + i)
            out.append({"id": f"{split}-{i}", "image_path": f"/fake/{split}_{i}.png", "erp": erp,
                        "query": "what colour?", "answer": f"{colour} panorama",
                        "references": [f"{colour} panorama", f"a {colour} panorama"]})
        return out

    train, val, test = items("train", n_train, 1), items("val", n_val, 2), items("test", n_test, 3)
    strip = lambda xs: [{"id": x["id"], "image_path": x["image_path"], "erp": x["erp"]} for x in xs]  # noqa: E731
    return Splits(strip(train), strip(val), train, val, test, source="fake")


def tiny_config(**overrides: Any) -> CoraConfig:
    sets = [
        "stages.stage1.max_steps=6", "stages.stage1.batch_size=4", "stages.stage1.lr=0.01",
        "stages.stage2.max_steps=6", "stages.stage2.batch_size=4", "stages.stage2.grad_accum=2", "stages.stage2.lr=0.03",
        "stages.stage3.max_steps=4", "stages.stage3.batch_size=4", "stages.stage3.lr=0.01",
        "stages.stage1.log_every=1", "stages.stage2.log_every=1", "stages.stage3.log_every=1",
        "stages.stage1.checkpoint_every=2", "stages.stage2.checkpoint_every=2", "stages.stage3.checkpoint_every=2",
        "eval.metrics=[cider]", "eval.batch_size=4", "device=cpu",
        # one epoch per stage, as these tests count steps (the tiny preset trains Stage 2 longer)
        "stages.stage1.epochs=1", "stages.stage2.epochs=1", "stages.stage3.epochs=1",
        # the seed's Stage-2 table and every annotation row, whatever the tiny preset's tuning
        "stages.stage2.overlap_weight=0.1", "stages.stage2.resampler_lr_scale=1.0",
        "stages.stage2.projector_lr_scale=1.0", "stages.stage3.projector_lr_scale=1.0", "data.train_targets=all",
    ]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return resolve_config("tiny", None, sets)


def fake_factory(config: CoraConfig, device: torch.device) -> FakeCoraModel:
    return FakeCoraModel.from_config(config, device)


# --- checks of the stand-in itself -----------------------------------------------------


def test_the_stand_in_implements_the_engine_protocol() -> None:
    from cora_kit.train.protocol import CoraModelLike

    assert isinstance(FakeCoraModel(resolve_config("tiny")), CoraModelLike)


def test_fake_shapes_and_schedule() -> None:
    torch.manual_seed(0)
    m = FakeCoraModel(tiny_config())
    splits = make_splits(4, 1, 1)
    erp = torch.stack([i["erp"] for i in splits.train])
    views = m.tile(erp)
    assert views.shape == (4, 5, 3, 8, 8)
    h = m.encode_frozen(views, 1)
    full = m.encode_frozen(views, 2)
    assert torch.allclose(m.encode_trainable(h, 1), full)
    latent = m.resample(full)
    loss, _ = m.overlap_loss(latent)
    assert torch.isfinite(loss)
    counts = m.set_stage(1)
    assert set(counts) == {"encoder_last_blocks", "resampler", "overlap_head"}
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == sum(counts.values())
