"""The CORA model assembled from plugin names, and its per-stage freeze schedule.

``CoraModel.from_config(config)`` builds every component through the registry (the core
never imports a concrete plugin): tiler -> encoder -> resampler -> {overlap head + loss,
PanoramaProjector + LanguageFusion + LLM}. Shapes (paper)::

    ERP [B,3,H,W] -> tile -> [B,9,3,256,256] -> encode_frozen / encode_trainable -> [B,9,256,1152]
    -> resample -> latent [B,9,256,1024]
       overlap_loss: tiles [B,8,256,1024] -> overlap head -> loss plugin (exact correspondences)
       lm_loss / generate: projector [B,1408,1024] -> fusion -> LLM

The seed's schedule (CORA-architecture.md, three-stage table) is ``SCHEDULE``; ``set_stage``
applies it and checks it, ``param_groups`` feeds AdamW.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from cora_kit.config import CoraConfig, StageConfig
from cora_kit.errors import CheckpointError, ConfigError
from cora_kit.geometry import Correspondences, TileLayout, overlap_correspondences
from cora_kit.models.fusion import IGNORE_INDEX, LanguageFusion
from cora_kit.models.overlap_head import OverlapHead
from cora_kit.models.projector import PanoramaProjector
from cora_kit.registry import REGISTRY

#: parameter group -> stages in which it trains (the seed's table; encoder: last k blocks)
SCHEDULE: dict[str, tuple[int, ...]] = {
    "encoder_blocks": (1,),
    "resampler": (1, 2),
    "overlap_head": (1,),
    "loss": (1,),
    "projector": (2, 3),
    "lora": (3,),
}
#: modules that are entirely frozen in a stage (kept in eval mode while training)
FROZEN_MODULES: dict[int, tuple[str, ...]] = {
    1: ("projector", "llm"),
    2: ("encoder", "overlap_head", "loss_fn", "llm"),
    3: ("encoder", "resampler", "overlap_head", "loss_fn"),
}
STAGES = (1, 2, 3)


@contextmanager
def _seeded(seed: int, offset: int) -> Iterator[None]:
    """Deterministic init of one component, independent of the others' sizes."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1009 + offset)
        yield


def _check_stage(stage: int) -> int:
    if stage not in STAGES:
        raise ValueError(f"stage must be 1, 2 or 3; got {stage!r}")
    return stage


def _fingerprint(params: list[torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p in params:
        t = p.detach()
        if t.device.type == "meta":
            h.update(f"meta{tuple(t.shape)}".encode())
            continue
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CoraModel(nn.Module):
    """The whole model; see the module docstring and the pipeline contract."""

    def __init__(
        self,
        config: CoraConfig,
        tiler: Any,
        encoder: nn.Module,
        resampler: nn.Module,
        overlap_head: nn.Module,
        loss_fn: nn.Module,
        projector: PanoramaProjector,
        llm: nn.Module,
        correspondences: Correspondences,
    ) -> None:
        super().__init__()
        self.config = config
        self.tiler = tiler
        self.encoder = encoder
        self.resampler = resampler
        self.overlap_head = overlap_head
        self.loss_fn = loss_fn
        self.projector = projector
        self.llm = llm
        self.layout: TileLayout = tiler.layout
        self.grid: tuple[int, int] = tuple(encoder.grid)  # type: ignore[assignment]
        self.latent_grid: tuple[int, int] = tuple(resampler.output_grid(self.grid))  # type: ignore[assignment]
        self.correspondences = correspondences
        self.fusion = LanguageFusion(llm.tokenizer, llm.vision_token, config.model.llm.max_text_tokens)
        self.stage: int | None = None
        self._key_memo: dict[int, tuple[tuple, str]] = {}

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_config(cls, config: CoraConfig, device: str | torch.device = "cpu") -> CoraModel:
        """Build every component from the resolved config (seeded by ``config.seed``).

        ``device="meta"`` builds shapes only (no memory, no weights: parameter counts).
        """
        m = config.model
        device = torch.device(device)
        # meta: shapes only; otherwise build on CPU (geometry and stitcher tables stay there)
        with torch.device("meta" if device.type == "meta" else "cpu"):
            tiler = REGISTRY.create("tiler", m.tiler.name, **m.tiler.options)
            with _seeded(config.seed, 1):
                encoder = REGISTRY.create("encoder", m.encoder.name, **_hf_options(m.encoder, "model.encoder"))
            enc_opts = _resampler_dims(m, encoder.hidden_size)
            with _seeded(config.seed, 2):
                resampler = REGISTRY.create("resampler", m.resampler.name, **enc_opts)
            # the latent width: model.latent_dim, or the encoder's for a resampler that keeps it
            latent_dim = int(getattr(resampler, "out_dim", m.latent_dim))
            loss_fn = REGISTRY.create("loss", m.loss.name, **m.loss.options)
            head_cfg = m.overlap_head
            dropout = head_cfg.dropout if head_cfg.dropout is not None else float(getattr(loss_fn, "head_dropout", 0.0))
            with _seeded(config.seed, 3):
                overlap_head = OverlapHead(
                    in_dim=latent_dim,
                    hidden_dim=head_cfg.hidden_dim or latent_dim,
                    out_dim=head_cfg.out_dim or latent_dim,
                    dropout=dropout,
                )
            with _seeded(config.seed, 4):
                llm = REGISTRY.create("llm", m.llm.name, **_hf_options(m.llm, "model.llm"))
                lora = m.llm.lora
                llm.enable_lora(lora.r, lora.alpha, lora.dropout, lora.target_modules)
            stitcher = REGISTRY.create("stitcher", m.stitcher.name, **m.stitcher.options)
            latent_grid = tuple(resampler.output_grid(tuple(encoder.grid)))
            with _seeded(config.seed, 5):
                projector = PanoramaProjector(
                    latent_dim, llm.hidden_size, stitcher, tiler.layout, latent_grid, pe=m.projector.pe
                )
        correspondences = overlap_correspondences(
            tiler.layout, latent_grid, mode=m.correspondence_mode, include_global=False
        )
        model = cls(config, tiler, encoder, resampler, overlap_head, loss_fn, projector, llm, correspondences)
        return model if device.type in ("cpu", "meta") else model.to(device)

    # -- vision path -------------------------------------------------------------

    def _k(self, stage: int) -> int:
        """Encoder blocks that run with grad in ``stage`` (seed: 2 in Stage 1, else 0)."""
        return self.config.model.encoder.num_trainable_blocks if _check_stage(stage) == 1 else 0

    def tile(self, erp: torch.Tensor) -> torch.Tensor:
        """ERP ``[B,3,H,W]`` in [0,1] -> views ``[B,V,3,s,s]``."""
        return self.tiler(erp).views

    def encode_frozen(self, views: torch.Tensor, stage: int) -> torch.Tensor:
        """``[B,V,3,s,s]`` -> ``[B,V,P,Dv]``: the frozen prefix of ``stage`` (no grad).

        Stage 1: hidden states before the last k blocks; stages 2, 3: final features.
        """
        if views.dim() != 5:
            raise ValueError(f"encode_frozen expects views [B,V,3,s,s]; got {list(views.shape)}")
        B, V = views.shape[:2]
        k = self._k(stage)
        with torch.no_grad():
            h = self.encoder.forward_frozen(views.flatten(0, 1), k)
            if stage != 1:
                h = self.encoder.forward_trainable(h, 0)
        return h.reshape(B, V, *h.shape[1:])

    def encode_trainable(self, hidden: torch.Tensor, stage: int) -> torch.Tensor:
        """``[B,V,P,Dv]`` -> features ``[B,V,P,Dv]``: Stage 1 runs the last k blocks (with
        grad when they train); stages 2 and 3 return ``hidden`` (already final)."""
        if hidden.dim() != 4:
            raise ValueError(f"encode_trainable expects hidden [B,V,P,Dv]; got {list(hidden.shape)}")
        if _check_stage(stage) != 1:
            return hidden
        B, V = hidden.shape[:2]
        out = self.encoder.forward_trainable(hidden.flatten(0, 1), self._k(1))
        return out.reshape(B, V, *out.shape[1:])

    def encoder_cache_key(self, stage: int) -> str:
        """Encoder id + config + frozen weights (fingerprint) + tiler + k: a cache entry made
        under another key is never reused."""
        k = self._k(stage)
        trainable = {id(p) for p in self.encoder.trainable_block_parameters(k)} if stage == 1 else set()
        frozen = [p for p in self.encoder.parameters() if id(p) not in trainable]
        state = tuple((p.data_ptr(), p._version) for p in frozen)
        memo = self._key_memo.get(stage)
        if memo is None or memo[0] != state:
            tiler_cfg = self.config.model.tiler
            text = json.dumps(
                {
                    "encoder": self.encoder.cache_key(),
                    "weights": _fingerprint(frozen),
                    "k": k,
                    "final": stage != 1,
                    "tiler": [tiler_cfg.name, tiler_cfg.options, repr(self.layout)],
                },
                sort_keys=True,
                default=str,
            )
            memo = (state, hashlib.sha256(text.encode()).hexdigest()[:32])
            self._key_memo[stage] = memo
        return memo[1]

    def resample(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B,V,P,Dv]`` -> latent ``[B,V,P',D]``."""
        if feats.dim() != 4:
            raise ValueError(f"resample expects features [B,V,P,Dv]; got {list(feats.shape)}")
        B, V = feats.shape[:2]
        out = self.resampler(feats.flatten(0, 1), self.grid)
        return out.reshape(B, V, *out.shape[1:])

    # -- losses and decoding -----------------------------------------------------

    def overlap_loss(self, latent: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Overlap head on the tile views of ``latent`` ``[B,V,P',D]`` (all views or tiles
        only) + the loss plugin on the exact correspondences."""
        tiles = self.correspondences.view_indices
        if latent.dim() != 4:
            raise ValueError(f"overlap_loss expects latent [B,V,P,D]; got {list(latent.shape)}")
        if latent.shape[1] == self.layout.num_views:
            latent = latent[:, tiles]
        elif latent.shape[1] != len(tiles):
            raise ValueError(
                f"overlap_loss expects {self.layout.num_views} views or {len(tiles)} tiles; got {latent.shape[1]}"
            )
        z = self.overlap_head(latent)
        if getattr(self.loss_fn, "two_views", False):
            return self.loss_fn(z, self.correspondences, self.latent_grid, second_view=self.overlap_head(latent))
        return self.loss_fn(z, self.correspondences, self.latent_grid)

    def lm_loss(
        self, latent: torch.Tensor, queries: list[str], answers: list[str]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Projector (PE + Linear + stitch) -> fusion -> LLM cross-entropy on answer tokens."""
        stitched = self.projector(latent)
        fused = self.fusion(stitched.tokens, queries, self.llm.embed_tokens, answers)
        out = self.llm(fused.inputs_embeds, fused.attention_mask, labels=fused.labels)
        assert fused.labels is not None
        logs = {
            "answer_tokens": float((fused.labels != IGNORE_INDEX).sum()),
            "seq_len": float(fused.inputs_embeds.shape[1]),
            "truncated": float(fused.truncated),
        }
        return out.loss, logs

    @torch.no_grad()
    def generate(
        self, latent: torch.Tensor, queries: list[str], max_new_tokens: int = 32, num_beams: int = 1
    ) -> list[str]:
        """Answers for ``latent`` ``[B,V,P',D]`` and B queries (eval mode while decoding)."""
        was_training = self.training
        self.eval()
        try:
            stitched = self.projector(latent)
            fused = self.fusion(stitched.tokens, queries, self.llm.embed_tokens)
            return self.llm.generate(fused.inputs_embeds, fused.attention_mask, max_new_tokens, num_beams)
        finally:
            self.train(was_training)

    # -- freeze schedule -----------------------------------------------------------

    def stage_groups(self, stage: int) -> dict[str, list[nn.Parameter]]:
        """Parameters that train in ``stage``, by group (the seed's table)."""
        _check_stage(stage)
        groups: dict[str, list[nn.Parameter]] = {
            "encoder_blocks": list(self.encoder.trainable_block_parameters(self._k(1))),
            "resampler": list(self.resampler.parameters()),
            "overlap_head": list(self.overlap_head.parameters()),
            "loss": list(self.loss_fn.parameters()),
            "projector": list(self.projector.parameters()),
            "lora": list(self.llm.lora_parameters()),
        }
        chosen = {name: params for name, params in groups.items() if stage in SCHEDULE[name]}
        if self.config.model.llm.trainable == "full" and stage in (2, 3):
            lora = {id(p) for p in groups["lora"]}
            chosen["llm_full"] = [p for p in self.llm.parameters() if id(p) not in lora]
        return chosen

    def set_stage(self, stage: int) -> dict[str, int]:
        """Freeze everything but ``stage``'s groups; returns ``{group: n_trainable}``.

        Raises ``RuntimeError`` if the result breaks the schedule (a frozen component with
        trainable weights, or no LoRA / projector weights where the seed trains them).
        """
        groups = self.stage_groups(stage)
        # zero-initialised LoRA is an exact no-op: skip its compute before Stage 3
        set_active = getattr(self.llm, "set_lora_active", None)
        if set_active is not None:
            lora_is_zero = getattr(self.llm, "lora_is_zero", lambda: False)()
            set_active(stage == 3 or not lora_is_zero)
        for p in self.parameters():
            p.requires_grad_(False)
        allowed: set[int] = set()
        for params in groups.values():
            for p in params:
                p.requires_grad_(True)
                allowed.add(id(p))
        wrong = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in allowed]
        if wrong:
            raise RuntimeError(f"stage {stage}: parameters outside the schedule would train: {wrong[:3]}")
        counts = {name: sum(p.numel() for p in params) for name, params in groups.items()}
        required = {1: ("overlap_head",), 2: ("projector",), 3: ("projector", "lora")}[stage]
        missing = [g for g in required if counts.get(g, 0) == 0]
        if missing:
            raise RuntimeError(f"stage {stage}: the schedule trains {', '.join(missing)} but it has no parameters")
        self.stage = stage
        self.train(self.training)
        return counts

    def train(self, mode: bool = True) -> CoraModel:
        """Like ``nn.Module.train``; modules frozen in the current stage stay in eval mode."""
        super().train(mode)
        if mode and self.stage is not None:
            full_llm = self.config.model.llm.trainable == "full" and self.stage in (2, 3)
            for name in FROZEN_MODULES[self.stage]:
                if name == "llm" and full_llm:
                    continue
                module = getattr(self, name)
                if isinstance(module, nn.Module):
                    module.eval()
        return self

    def param_groups(self, stage: int, stage_cfg: StageConfig) -> list[dict]:
        """AdamW groups; the resampler's lr is ``lr * resampler_lr_scale`` (seed Stage 2)."""
        out = []
        for name, params in self.stage_groups(stage).items():
            if not params:
                continue
            scale = stage_cfg.resampler_lr_scale if name == "resampler" else 1.0
            out.append({"params": params, "lr": stage_cfg.lr * scale, "weight_decay": stage_cfg.weight_decay, "name": name})
        return out

    # -- checkpoints -----------------------------------------------------------------

    def trainable_state_dict(self, stage: int) -> dict[str, torch.Tensor]:
        """``{parameter name: tensor}`` of what trains in ``stage`` (detached)."""
        ids = {id(p) for params in self.stage_groups(stage).values() for p in params}
        return {n: p.detach() for n, p in self.named_parameters() if id(p) in ids}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Copy ``state`` into the model; unknown names (strict) and shape mismatches are
        ``CheckpointError``s naming the parameter."""
        params = dict(self.named_parameters())
        for name, value in state.items():
            p = params.get(name)
            if p is None:
                if strict:
                    raise CheckpointError(
                        f"checkpoint parameter '{name}' does not exist in this model"
                        " (saved with another model config or plugin?)"
                    )
                continue
            if tuple(value.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"checkpoint parameter '{name}' has shape {list(value.shape)}; the model expects {list(p.shape)}"
                )
        with torch.no_grad():
            for name, value in state.items():
                if name in params:
                    params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))

    # -- reporting ---------------------------------------------------------------------

    def weights_fingerprint(self) -> str:
        """Hash of every parameter (names, shapes, values): written beside a run when the
        model is built, so a rebuild from ``config.yaml`` can prove it starts from the same
        frozen weights (seeded random init or the same pretrained files)."""
        named = sorted(self.named_parameters(), key=lambda kv: kv[0])
        return _fingerprint([p for _, p in named]) + f"-{len(named)}"

    def plugin_metadata(self) -> dict:
        """Per plugin kind: name, distribution, version, backend actually used, options."""
        m = self.config.model
        choices = {
            "tiler": (self.tiler, m.tiler),
            "encoder": (self.encoder, m.encoder),
            "resampler": (self.resampler, m.resampler),
            "loss": (self.loss_fn, m.loss),
            "stitcher": (self.projector.stitcher, m.stitcher),
            "llm": (self.llm, m.llm),
        }
        out: dict[str, Any] = {}
        for kind, (obj, choice) in choices.items():
            spec = getattr(obj, "plugin_spec", None) or REGISTRY.lookup(kind, choice.name)
            backend = getattr(obj, "backend", None)  # what this instance runs, when it says
            out[kind] = {
                "name": spec.name,
                "requested": choice.name,
                "distribution": spec.distribution,
                "version": spec.provenance.version,
                "backend": backend if isinstance(backend, str) else spec.resolve_backend(),
                "options": dict(choice.options),
            }
            source = getattr(obj, "source", None)
            if isinstance(source, str):
                out[kind]["source"] = source if len(source) < 200 else source[:200] + "..."
        out["layout"] = {"name": self.layout.name, "views": self.layout.num_views, "grid": list(self.grid),
                         "latent_grid": list(self.latent_grid), "latent_dim": self.projector.latent_dim,
                         "vision_tokens": self.projector.num_tokens}
        return out


def _resampler_dims(m: Any, encoder_width: int) -> dict[str, Any]:
    """The resampler's options plus ``in_dim`` (the encoder width) and ``out_dim``
    (``model.latent_dim``). A resampler whose parameters have no ``out_dim`` (``identity``)
    cannot change the width: it gets ``in_dim`` only, and the latent width is the encoder's
    (the overlap head and the PanoramaProjector's Linear are sized from it)."""
    opts = dict(m.resampler.options)
    spec = REGISTRY.lookup("resampler", m.resampler.name)
    fields = spec.params_model.model_fields if spec.params_model is not None else {"in_dim": 0, "out_dim": 0}
    for key, value in (("in_dim", encoder_width), ("out_dim", m.latent_dim)):
        if key not in fields:
            continue
        if key in opts and opts[key] != value:
            raise ConfigError(
                f"model.resampler.options.{key}={opts[key]} conflicts with the model"
                f" ({key} is {value}: encoder width / model.latent_dim); drop the option"
            )
        opts[key] = value
    return opts


def _hf_options(choice: Any, section: str) -> dict[str, Any]:
    """Plugin kwargs of an encoder/LLM choice: options + pretrained / random init + arch."""
    opts = dict(choice.options)
    if choice.pretrained is None:
        opts["random_init"] = True
    else:
        opts["pretrained"] = choice.pretrained
    if choice.arch:
        opts["arch"] = dict(choice.arch)
    if section == "model.llm":
        if choice.tokenizer is not None:
            opts["tokenizer"] = choice.tokenizer
        if choice.trust_remote_code:
            opts["trust_remote_code"] = True
    return opts


__all__ = ["CoraModel", "FROZEN_MODULES", "SCHEDULE"]
