"""``CoraModel``: the CORA model assembled from plugin names (``build.py``), with the seed's
freeze schedule (``schedule.py``). Shapes (paper)::

    ERP [B,3,H,W] -> tile -> [B,9,3,256,256] -> encode_frozen / encode_trainable -> [B,9,256,1152]
    -> resample -> latent [B,9,256,1024]
       overlap_loss: tiles [B,8,256,1024] -> overlap head -> loss plugin (exact correspondences)
       lm_loss / generate: projector [B,1408,1024] -> fusion -> LLM

Its methods are the stage API the engine uses (``cora_kit.train.protocol.CoraModelLike``).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import torch
from torch import nn

from cora_kit import interfaces as I
from cora_kit.config import CoraConfig
from cora_kit.errors import ConfigError
from cora_kit.geometry import Correspondences, TileLayout, overlap_correspondences
from cora_kit.models.fusion import IGNORE_INDEX, LanguageFusion
from cora_kit.models.projector import PanoramaProjector
from cora_kit.pipeline.build import build_components
from cora_kit.pipeline.schedule import FreezeSchedule, check_stage
from cora_kit.registry import REGISTRY

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


class CoraModel(FreezeSchedule):
    """The whole model; see the module docstring and the pipeline contract."""

    def __init__(
        self,
        config: CoraConfig,
        tiler: I.Tiler,
        encoder: I.VisionEncoder,
        resampler: I.Resampler,
        overlap_head: nn.Module,
        loss_fn: I.OverlapLoss,
        projector: PanoramaProjector,
        llm: I.LLMAdapter,
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
        self.fusion = LanguageFusion(
            llm.tokenizer,
            llm.vision_token,
            config.model.llm.max_text_tokens,
            vision_placement=config.model.llm.vision_placement,
        )
        self.stage: int | None = None
        self._key_memo: dict[int, tuple[tuple, str]] = {}
        #: component -> what gradient checkpointing does there (empty: off)
        self.gradient_checkpointing: dict[str, str] = {}

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_config(cls, config: CoraConfig, device: str | torch.device = "cpu") -> CoraModel:
        """Build every component from the resolved config (seeded by ``config.seed``).

        ``device="meta"`` builds shapes only (no memory, no weights: parameter counts).
        """
        device = torch.device(device)
        # meta: shapes only; otherwise build on CPU (geometry and stitcher tables stay there)
        with torch.device("meta" if device.type == "meta" else "cpu"):
            c = build_components(config)
        correspondences = overlap_correspondences(
            c.tiler.layout, c.latent_grid, mode=config.model.correspondence_mode, include_global=False
        )
        model = cls(config, c.tiler, c.encoder, c.resampler, c.overlap_head, c.loss_fn, c.projector, c.llm, correspondences)
        if config.model.gradient_checkpointing:
            model.set_gradient_checkpointing(True)
        return model if device.type in ("cpu", "meta") else model.to(device)

    def set_gradient_checkpointing(self, enabled: bool) -> dict[str, str]:
        """Checkpoint the encoder's and LLM's layers (their libraries' switches) and the
        resampler's layer stack; returns ``{component: what was done}``. A component whose
        plugin cannot is reported (warning, and ``plugins.json``), never silently skipped."""
        done: dict[str, str] = {}
        for name, component in (("encoder", self.encoder), ("resampler", self.resampler), ("llm", self.llm)):
            how = component.set_gradient_checkpointing(enabled)
            if enabled and not how:
                plugin = getattr(self.config.model, name).name
                how = f"not supported by the {name} plugin '{plugin}': its activations are kept"
                warnings.warn(f"gradient checkpointing: {how}", stacklevel=2)
            done[name] = how
        self.gradient_checkpointing = done if enabled else {}
        self.train(self.training)
        return done

    # -- vision path -------------------------------------------------------------

    def _k(self, stage: int) -> int:
        """Encoder blocks that run with grad in ``stage`` (seed: 2 in Stage 1, else 0)."""
        return self.encoder_blocks() if check_stage(stage) == 1 else 0

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
        if check_stage(stage) != 1:
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
        want = self.latent_grid[0] * self.latent_grid[1]
        if out.dim() != 3 or out.shape[1] != want:
            mode = "training" if self.resampler.training else "evaluation"
            raise ConfigError(
                f"model.resampler '{self.config.model.resampler.name}' returned {list(out.shape)} in {mode} mode;"
                f" the model was built for its declared grid {self.latent_grid} ({want} tokens per view):"
                " a resampler whose token count changes between training and evaluation is not supported here"
            )
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
        if self.loss_fn.two_views:
            return self.loss_fn(z, self.correspondences, self.latent_grid, second_view=self.overlap_head(latent))
        return self.loss_fn(z, self.correspondences, self.latent_grid)

    def lm_loss(
        self, latent: torch.Tensor, queries: list[str], answers: list[str]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Projector (PE + Linear + stitch) -> fusion -> LLM cross-entropy on answer tokens."""
        stitched = self.projector(latent)
        fused = self.fusion(stitched.tokens, queries, self.llm.embed_tokens, answers)
        assert fused.labels is not None
        loss = self.llm.answer_loss(fused.inputs_embeds, fused.attention_mask, fused.labels)
        logs = {
            "answer_tokens": float((fused.labels != IGNORE_INDEX).sum()),
            "seq_len": float(fused.inputs_embeds.shape[1]),
            "truncated": float(fused.truncated),
        }
        return loss, logs

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
            spec = REGISTRY.lookup(kind, choice.name)
            out[kind] = {
                "name": spec.name,
                "requested": choice.name,
                "distribution": spec.distribution,
                "version": spec.provenance.version,
                # what this instance runs, when it says (interfaces.Reported), else the registered backend
                "backend": obj.backend if obj.backend is not None else spec.resolve_backend(),
                "options": dict(choice.options),
            }
            if obj.source is not None:
                out[kind]["source"] = obj.source if len(obj.source) < 200 else obj.source[:200] + "..."
        if self.gradient_checkpointing:
            out["gradient_checkpointing"] = dict(self.gradient_checkpointing)
        out["layout"] = {"name": self.layout.name, "views": self.layout.num_views, "grid": list(self.grid),
                         "latent_grid": list(self.latent_grid), "latent_dim": self.projector.latent_dim,
                         "vision_tokens": self.projector.num_tokens}
        return out


__all__ = ["CoraModel"]
