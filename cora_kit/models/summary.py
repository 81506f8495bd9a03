"""Parameter counts, the per-stage freeze schedule and a training-memory estimate.

The model is built on the meta device (no memory, no weights, no download): pretrained
encoder / LLM entries are replaced by random-init builds of the same architecture, read
from a local copy of their config.json or from the copies shipped in
``cora_kit/configs/models``. The memory figure is an estimate (formula in
``memory_estimate``), not a measurement; ``benchmarks/RESULTS.md`` has measured peaks.
"""

from __future__ import annotations

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


def memory_estimate(model: Any, stage: int, batch_size: int, bytes_per_value: int) -> dict[str, float]:
    """Training memory (GiB) of one step at ``batch_size``: weights + grads + AdamW states +
    activations. Activations of a transformer layer that backpropagates: ``34 * L * h``
    values-in-16-bit per sample (Korthikanti et al. 2022, fused attention), scaled to
    ``bytes_per_value``; LM logits: ``3 * L * vocab`` values (logits, softmax, grad);
    resampler/heads: ``24 * V * P * D_latent``. An estimate to size hardware, not a promise."""
    cfg = model.config
    n_all = _count(model.parameters())
    n_train = sum(_count(p) for p in model.stage_groups(stage).values())
    weights = n_all * bytes_per_value
    optim = n_train * (4 + 8)  # fp32 grads + AdamW m and v
    views = model.layout.num_views
    tiles = len(model.correspondences.view_indices)
    P = model.latent_grid[0] * model.latent_grid[1]
    D = cfg.model.latent_dim
    act_per_value = bytes_per_value / 2
    acts = 24 * batch_size * (views if stage > 1 else tiles) * P * D * bytes_per_value
    if stage == 1:
        enc = model.encoder
        k = cfg.model.encoder.num_trainable_blocks
        acts += 34 * k * batch_size * tiles * enc.grid[0] * enc.grid[1] * enc.hidden_size * act_per_value
    else:
        lm_cfg = model.llm.model.config
        L = model.projector.num_tokens + cfg.model.llm.max_text_tokens
        acts += 34 * lm_cfg.num_hidden_layers * batch_size * L * lm_cfg.hidden_size * act_per_value
        acts += 3 * batch_size * L * lm_cfg.vocab_size * bytes_per_value
    total = weights + optim + acts
    return {
        "weights": weights / GIB,
        "grads_and_optimizer": optim / GIB,
        "activations": acts / GIB,
        "total": total / GIB,
    }


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
    bytes_per_value = 4 if dtype == "fp32" else 2
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
            f"stage{s}": memory_estimate(model, s, batch_size, bytes_per_value) for s in (1, 2, 3)
        },
        "batch_size": batch_size,
        "dtype": dtype,
        "notes": notes,
    }
