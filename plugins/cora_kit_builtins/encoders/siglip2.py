"""SigLIP2 vision encoder (seed component 1) through transformers.

``google/siglip2-so400m-patch16-256`` is a fixed-resolution SigLIP2 checkpoint: it uses the
SigLIP (v1) architecture, so transformers loads its vision tower with
``SiglipVisionModel`` (``Siglip2VisionModel`` is the NaFlex variant). Paper: 27 blocks,
width 1152, 16x16 patches of a 256x256 view -> ``[N, 256, 1152]`` on grid (16, 16).

Pixels come in as ``[N,3,s,s]`` floats in [0, 1] and are normalised as the checkpoint's
image processor does (resize to ``image_size`` bilinear, ``(x - mean) / std``; SigLIP:
mean = std = 0.5). The attention-pooling head of the checkpoint is kept (it is part of
the 428M-parameter tower) but never run: CORA uses the patch tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cora_kit.errors import ConfigError
from cora_kit.interfaces import EncoderParams, VisionEncoder, hf_gradient_checkpointing
from cora_kit.models import hf_assets

PAPER_ID = "google/siglip2-so400m-patch16-256"
SECTION = "model.encoder"


class Siglip2Params(EncoderParams):
    """``pretrained``: local path or hub id (None: random init of ``arch`` over the paper
    architecture); ``random_init``: build the architecture of ``pretrained`` without its
    weights (shapes, parameter counts, memory); ``arch``: config overrides (random init)."""

    #: small random-init build for ``cora_kit.testing`` conformance checks
    testing_params: ClassVar[dict[str, Any]] = {
        "random_init": True,
        "arch": {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                 "num_hidden_layers": 2, "num_attention_heads": 2, "vision_use_head": False},
    }

    pretrained: str | None = PAPER_ID
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    attn_implementation: str = "sdpa"


def _vision_part(config: dict[str, Any]) -> dict[str, Any]:
    """The vision config of a full SiglipConfig dict, or the dict itself."""
    return dict(config.get("vision_config", config))


def _processor_stats(folder: Any) -> tuple[list[float], list[float]] | None:
    if folder is None:
        return None
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not data.get("do_normalize", True):
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return list(data.get("image_mean", [0.5] * 3)), list(data.get("image_std", [0.5] * 3))


class Siglip2Encoder(VisionEncoder):
    """``[N,3,s,s]`` in [0,1] -> ``[N,P,Dv]``; ``forward_frozen``/``forward_trainable``
    split the block stack so the frozen prefix can be cached."""

    def __init__(
        self,
        pretrained: str | None = PAPER_ID,
        arch: dict[str, Any] | None = None,
        random_init: bool = False,
        image_mean: tuple[float, float, float] | None = None,
        image_std: tuple[float, float, float] | None = None,
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        arch = dict(arch or {})
        folder = None
        if pretrained is not None and not random_init:
            if arch:
                raise ConfigError(
                    f"model.encoder.arch overrides ({', '.join(sorted(arch))}) apply to random-init builds"
                    f" only; with pretrained '{pretrained}' set random_init or drop arch"
                )
            folder = hf_assets.resolve_pretrained(pretrained, "vision encoder", SECTION)
            # fp32 master weights whatever the files hold (a bf16 export, a bf16 hub copy):
            # transformers' default dtype "auto" would keep the files' dtype
            self.model = SiglipVisionModel.from_pretrained(
                str(folder), local_files_only=True, attn_implementation=attn_implementation, dtype=torch.float32
            )
            self.source = f"pretrained:{folder}"
        else:
            base_id = pretrained or PAPER_ID
            base = _vision_part(hf_assets.architecture_config(base_id, "vision encoder", SECTION))
            for key in ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype"):
                base.pop(key, None)
            base.update(arch)
            config = SiglipVisionConfig(**base)
            config._attn_implementation = attn_implementation
            self.model = SiglipVisionModel(config)
            self.source = "random-init:" + json.dumps(base, sort_keys=True)
            folder = hf_assets.find_local(base_id) if pretrained else None
            folder = folder or hf_assets.shipped_config_dir(base_id)
        stats = _processor_stats(folder)
        mean, std = stats if stats is not None else ([0.5] * 3, [0.5] * 3)
        if image_mean is not None:
            mean = list(image_mean)
        if image_std is not None:
            std = list(image_std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        cfg = self.model.config
        self.image_size = int(cfg.image_size)
        side = self.image_size // int(cfg.patch_size)
        self.grid = (side, side)
        self.hidden_size = int(cfg.hidden_size)
        self.num_blocks = int(cfg.num_hidden_layers)

    # -- parts of the transformers model (v4 wraps them in .vision_model) --------

    @property
    def _tower(self) -> nn.Module:
        return getattr(self.model, "vision_model", self.model)

    @property
    def blocks(self) -> nn.ModuleList:
        return self._tower.encoder.layers

    def _check_k(self, k: int) -> int:
        if not 0 <= k <= self.num_blocks:
            raise ValueError(f"num_trainable_blocks must be in [0, {self.num_blocks}]; got {k}")
        return k

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N,3,s,s]`` in [0,1] -> normalised ``[N,3,S,S]`` at the model's resolution."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"siglip2 expects pixels [N,3,s,s]; got {list(pixels.shape)}")
        x = pixels.to(self.mean.dtype)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def forward_frozen(self, pixels: torch.Tensor, num_trainable_blocks: int) -> torch.Tensor:
        """``[N,3,s,s]`` -> hidden ``[N,P,Dv]`` after the first ``num_blocks - k`` blocks."""
        k = self._check_k(num_trainable_blocks)
        x = self.preprocess(pixels).to(self._tower.embeddings.patch_embedding.weight.dtype)
        h = self._tower.embeddings(x)
        for block in self.blocks[: self.num_blocks - k]:
            h = block(h, None)
        return h

    def forward_trainable(self, hidden: torch.Tensor, num_trainable_blocks: int) -> torch.Tensor:
        """Hidden ``[N,P,Dv]`` -> features ``[N,P,Dv]``: the last k blocks and the final norm."""
        k = self._check_k(num_trainable_blocks)
        if hidden.dim() != 3 or hidden.shape[1:] != (self.grid[0] * self.grid[1], self.hidden_size):
            raise ValueError(
                f"siglip2 expects hidden [N,{self.grid[0] * self.grid[1]},{self.hidden_size}]; got {list(hidden.shape)}"
            )
        h = hidden
        for block in self.blocks[self.num_blocks - k :]:
            h = block(h, None)
        return self._tower.post_layernorm(h)

    def trainable_block_parameters(self, num_trainable_blocks: int) -> list[nn.Parameter]:
        """Parameters of the last k blocks and the final LayerNorm (empty for k = 0)."""
        k = self._check_k(num_trainable_blocks)
        if k == 0:
            return []
        params = [p for block in self.blocks[self.num_blocks - k :] for p in block.parameters()]
        return params + list(self._tower.post_layernorm.parameters())

    def set_gradient_checkpointing(self, enabled: bool) -> str:
        """transformers' own switch on the wrapped model (non-reentrant)."""
        return hf_gradient_checkpointing(self.model, enabled)

    def cache_key(self) -> str:
        """Class + weights source + config + normalisation (weights themselves are
        fingerprinted by the pipeline, which knows what is frozen)."""
        text = json.dumps(
            {
                "class": type(self.model).__name__,
                "source": self.source,
                "config": self.model.config.to_json_string(use_diff=False),
                "mean": self.mean.flatten().tolist(),
                "std": self.std.flatten().tolist(),
            },
            sort_keys=True,
        )
        return "siglip2-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def save_pretrained(self, folder: Path) -> list[str]:
        """The vision tower (``save_pretrained``, safetensors) and a preprocessor_config.json
        with this encoder's normalisation; ``Siglip2Encoder(pretrained=folder)`` loads both."""
        folder = Path(folder)
        self.model.save_pretrained(str(folder), safe_serialization=True)
        proc = {"do_normalize": True, "image_mean": self.mean.flatten().tolist(), "image_std": self.std.flatten().tolist()}
        (folder / "preprocessor_config.json").write_text(json.dumps(proc, indent=2) + "\n", encoding="utf-8")
        return sorted(str(p.relative_to(folder)) for p in folder.glob("*.safetensors"))

    def summary_notes(self) -> list[str]:
        """The checkpoint's attention-pooling head, when present: loaded, never run."""
        head = getattr(self._tower, "head", None)
        if head is None:
            return []
        n = sum(p.numel() for p in head.parameters())
        return [f"encoder includes the checkpoint's attention-pooling head ({n:,} params),"
                " kept for loading but never run (CORA uses patch tokens)"]
