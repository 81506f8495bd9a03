"""Parameter counts, the per-stage freeze schedule and a training-memory estimate.

The model is built on the meta device (no memory, no weights, no download): pretrained
encoder / LLM entries are replaced by random-init builds of the same architecture, read
from a local copy of their config.json or from the copies shipped in
``cora_kit/configs/models``. The memory figure is an estimate (formula in
``memory_estimate``), not a measurement; ``benchmarks/RESULTS.md`` has measured peaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from cora_kit.config import CoraConfig

COMPONENTS = ("encoder", "resampler", "overlap_head", "projector", "llm", "lora")
#: schedule group -> component it belongs to
GROUP_COMPONENT = {
    "encoder_blocks": "encoder",
    "resampler": "resampler",
    "overlap_head": "overlap_head",
    "loss": "overlap_head",
    "projector": "projector",
    "lora": "lora",
}
GIB = 1024**3


def meta_config(config: CoraConfig) -> CoraConfig:
    """``config`` with pretrained encoder/LLM turned into random-init builds of their architecture."""
    data = config.model_dump()
    for key in ("encoder", "llm"):
        section = data["model"][key]
        if section.get("pretrained") is not None:
            section["options"] = {**section.get("options", {}), "random_init": True}
    return CoraConfig.model_validate(data)


def _count(params: Any) -> int:
    return int(sum(p.numel() for p in params))


#: activation coefficients, in values saved per token (see ``memory_estimate``); calibrated
#: on the paper preset (BiMamba) at batch 1 on an H200 (benchmarks/RESULTS.md)
ACT_LLM_LAYER = 44  # per LLM layer, x hidden size (SwiGLU, q/k norms, rope)
ACT_LORA_LAYER = 10  # extra per LLM layer when LoRA trains (dropout copies of 7 inputs)
ACT_LOGITS = 3.5  # x vocab, float32 (logits, softmax, gradient)
ACT_RESAMPLER = 200  # per view token, x latent dim (resampler + overlap head + loss)
ACT_ENCODER_BLOCK = 16  # per trainable encoder block, x encoder width
#: with ``model.gradient_checkpointing`` a layer keeps only its input (measured 1.5 values
#: per token x width on CPU: benchmarks/grad_checkpointing.py); during backward one layer
#: at a time is recomputed and holds its full amount again
ACT_CHECKPOINTED_LAYER = 1.5


def _checkpointed(per_layer: float, layers: int) -> float:
    """Activation values of a ``layers``-deep stack when checkpointed: every layer's input
    plus one layer recomputed at a time (``per_layer`` each without checkpointing)."""
    return layers * ACT_CHECKPOINTED_LAYER + per_layer if layers else 0.0


def _resampler_layers(model: Any) -> int:
    """Layers ``set_gradient_checkpointing`` would wrap in the resampler (0: none)."""
    from torch import nn

    names = getattr(model.resampler, "checkpoint_layer_lists", ())
    return sum(len(getattr(model.resampler, n)) for n in names
               if isinstance(getattr(model.resampler, n, None), nn.ModuleList | nn.Sequential))


def memory_estimate(model: Any, stage: int, batch_size: int, act_bytes: int = 4,
                    checkpointing: bool = False) -> dict[str, float]:
    """Training memory (GiB) of one step at ``batch_size``: fp32 weights + fp32 grads and
    AdamW states of the trainable part + activations (``act_bytes`` per value: 4 fp32,
    2 under bf16 autocast; LM logits stay fp32). Activations are the coefficients above
    times the token counts: an estimate to size hardware, calibrated on the paper preset
    with BiMamba; other resamplers and losses keep different amounts. ``checkpointing``:
    ``model.gradient_checkpointing`` (encoder blocks, resampler layers and LLM layers
    keep their inputs only; the resampler's share is spread evenly over its layers)."""
    cfg = model.config
    n_all = _count(model.parameters())
    n_train = sum(_count(p) for p in model.stage_groups(stage).values())
    weights = n_all * 4
    optim = n_train * (4 + 8)
    V = model.layout.num_views  # every view runs through the encoder and the resampler
    P = model.latent_grid[0] * model.latent_grid[1]
    acts = 0.0
    if stage in (1, 2):
        coef = float(ACT_RESAMPLER)
        n_res = _resampler_layers(model)
        if checkpointing and n_res:
            coef = _checkpointed(ACT_RESAMPLER / n_res, n_res)
        acts += coef * batch_size * V * P * cfg.model.latent_dim * act_bytes
    if stage == 1:
        enc = model.encoder
        k = cfg.model.encoder.num_trainable_blocks
        coef = _checkpointed(ACT_ENCODER_BLOCK, k) if checkpointing else ACT_ENCODER_BLOCK * k
        acts += coef * batch_size * V * enc.grid[0] * enc.grid[1] * enc.hidden_size * act_bytes
    else:
        lm_cfg = model.llm.model.config
        L = model.projector.num_tokens + cfg.model.llm.max_text_tokens
        per_layer = ACT_LLM_LAYER + (ACT_LORA_LAYER if stage == 3 else 0)
        n = lm_cfg.num_hidden_layers
        coef = _checkpointed(per_layer, n) if checkpointing else per_layer * n
        acts += coef * batch_size * L * lm_cfg.hidden_size * act_bytes
        acts += ACT_LOGITS * batch_size * L * lm_cfg.vocab_size * 4
    return {
        "weights": weights / GIB,
        "grads_and_optimizer": optim / GIB,
        "activations": acts / GIB,
        "total": (weights + optim + acts) / GIB,
    }


def saved_activation_bytes(fn: Callable[[], Any], exclude: Iterable[Any] = ()) -> tuple[Any, int]:
    """``(fn(), bytes)``: the distinct storages autograd saved for backward while ``fn`` ran
    (what training keeps between forward and backward), less those of ``exclude``
    (parameters: weights are counted by ``memory_estimate`` separately). Device-independent,
    so the estimate's activation coefficients can be checked on a CPU."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude if t.device.type != "meta"}
    seen: dict[int, int] = {}

    def pack(t: Any) -> Any:
        if t.device.type != "meta":
            ptr = t.untyped_storage().data_ptr()
            if ptr not in skip:
                seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def model_summary(config: CoraConfig, batch_size: int = 1, dtype: str = "fp32") -> dict[str, Any]:
    """Counts per component and stage, plus ``memory_gib`` per stage (see ``memory_estimate``)."""
    from cora_kit.pipeline import SCHEDULE, CoraModel

    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype must be fp32 or bf16; got {dtype!r}")
    model = CoraModel.from_config(meta_config(config), device="meta")
    lora_ids = {id(p) for p in model.llm.lora_parameters()}
    counts = {
        "encoder": _count(model.encoder.parameters()),
        "resampler": _count(model.resampler.parameters()),
        "overlap_head": _count(model.overlap_head.parameters()) + _count(model.loss_fn.parameters()),
        "projector": _count(model.projector.parameters()),
        "llm": _count(p for p in model.llm.parameters() if id(p) not in lora_ids),
        "lora": _count(model.llm.lora_parameters()),
    }
    components: dict[str, Any] = {name: {"params": counts[name], "trainable": {}} for name in COMPONENTS}
    trainable: dict[str, int] = {}
    for stage in (1, 2, 3):
        per = {name: 0 for name in COMPONENTS}
        for group, params in model.stage_groups(stage).items():
            per[GROUP_COMPONENT[group]] += _count(params)
        for name in COMPONENTS:
            components[name]["trainable"][f"stage{stage}"] = per[name]
        trainable[f"stage{stage}"] = sum(per.values())
    head = getattr(getattr(model.encoder, "_tower", None), "head", None)
    notes = []
    if head is not None:
        notes.append(
            f"encoder includes the checkpoint's attention-pooling head ({_count(head.parameters()):,} params),"
            " kept for loading but never run (CORA uses patch tokens)"
        )
    act_bytes = 4 if dtype == "fp32" else 2
    gc = bool(config.model.gradient_checkpointing)
    return {
        "preset": config.preset,
        "encoder": config.model.encoder.pretrained or "random-init (arch)",
        "llm": config.model.llm.pretrained or "random-init (arch)",
        "components": components,
        "total": sum(counts.values()),
        "trainable": trainable,
        "schedule": {group: [f"stage{s}" for s in stages] for group, stages in SCHEDULE.items()},
        "vision_tokens": model.projector.num_tokens,
        "grid": list(model.grid),
        "memory_gib": {
            f"stage{s}": memory_estimate(model, s, batch_size, act_bytes, gc) for s in (1, 2, 3)
        },
        # the other setting of model.gradient_checkpointing, to show what it changes
        "memory_gib_other_checkpointing": {
            f"stage{s}": memory_estimate(model, s, batch_size, act_bytes, not gc) for s in (1, 2, 3)
        },
        "gradient_checkpointing": gc,
        "batch_size": batch_size,
        "dtype": dtype,
        "notes": notes,
    }
