"""``cora-kit model-summary``: parameter counts, the per-stage freeze schedule and a
training-memory estimate (``model_summary(config)`` is the Python API, the command prints it).

The model is built on the meta device (no memory, no weights, no download): pretrained
encoder / LLM entries are replaced by random-init builds of the same architecture, read
from a local copy of their config.json or from the copies shipped in
``cora_kit/configs/models``. The memory figure is an estimate (formula in
``memory_estimate``), not a measurement; ``benchmarks/RESULTS.md`` has measured peaks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cora_kit.config import CoraConfig, resolve_config

COMPONENTS = ("encoder", "resampler", "overlap_head", "projector", "llm", "lora")
#: schedule group -> component it belongs to
GROUP_COMPONENT = {
    "encoder_blocks": "encoder",
    "resampler": "resampler",
    "overlap_head": "overlap_head",
    "loss": "overlap_head",
    "projector": "projector",
    "lora": "lora",
    "llm_full": "llm",  # model.llm.trainable: full (tiny preset): every LM weight trains in stages 2-3
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
        n_res = len(model.resampler.checkpoint_layers())
        if checkpointing and n_res:
            coef = _checkpointed(ACT_RESAMPLER / n_res, n_res)
        acts += coef * batch_size * V * P * cfg.model.latent_dim * act_bytes
    if stage == 1:
        enc = model.encoder
        k = cfg.model.encoder.num_trainable_blocks
        coef = _checkpointed(ACT_ENCODER_BLOCK, k) if checkpointing else ACT_ENCODER_BLOCK * k
        acts += coef * batch_size * V * enc.grid[0] * enc.grid[1] * enc.hidden_size * act_bytes
    else:
        llm = model.llm
        L = model.projector.num_tokens + cfg.model.llm.max_text_tokens
        per_layer = ACT_LLM_LAYER + (ACT_LORA_LAYER if stage == 3 else 0)
        n = llm.num_layers
        coef = _checkpointed(per_layer, n) if checkpointing else per_layer * n
        acts += coef * batch_size * L * llm.hidden_size * act_bytes
        acts += ACT_LOGITS * batch_size * L * llm.vocab_size * 4
    return {
        "weights": weights / GIB,
        "grads_and_optimizer": optim / GIB,
        "activations": acts / GIB,
        "total": (weights + optim + acts) / GIB,
    }


def model_summary(config: CoraConfig, batch_size: int = 1, dtype: str = "fp32") -> dict[str, Any]:
    """Counts per component and stage, plus ``memory_gib`` per stage (see ``memory_estimate``)."""
    from cora_kit.pipeline import SCHEDULE, CoraModel  # torch and the plugins: only when used

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
    notes = list(model.encoder.summary_notes())
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


def _fmt(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n >= 1e5 else f"{n:,}"


def model_summary_command(
    preset: str = typer.Option(None, "--preset", "-p", help="Preset name (tiny, paper)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML file layered over the preset."),
    overrides: list[str] = typer.Option([], "--set", help="Override one key, e.g. --set model.resampler.name=mlp."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1, help="Batch size of the memory estimate."),
    dtype: str = typer.Option("fp32", "--dtype", help="Activation precision of the estimate: fp32, or bf16 (autocast; weights stay fp32)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Build the model on the meta device (no memory, no download) and print parameter
    counts, what trains in each stage and an estimate of training memory."""
    summary = model_summary(resolve_config(preset, config, overrides), batch_size=batch_size, dtype=dtype)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    if not console.is_terminal:  # piped or logged: do not cut the memory table to 80 columns
        console = Console(width=200)
    table = Table(title=f"cora-kit model ({summary['preset']}): {summary['vision_tokens']} vision tokens")
    for col in ("component", "params", "stage 1", "stage 2", "stage 3"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for name in COMPONENTS:
        comp = summary["components"][name]
        cells = [comp["trainable"][f"stage{s}"] for s in (1, 2, 3)]
        table.add_row(name, _fmt(comp["params"]), *(_fmt(c) if c else "frozen" for c in cells))
    table.add_row("total", _fmt(summary["total"]), *(_fmt(summary["trainable"][f"stage{s}"]) for s in (1, 2, 3)))
    console.print(table)
    gc = summary["gradient_checkpointing"]
    other = "off" if gc else "on"
    mem = Table(title=f"estimated training memory, batch {summary['batch_size']}, {summary['dtype']},"
                      f" gradient checkpointing {'on' if gc else 'off'} (GiB)")
    for col in ("stage", "weights", "grads+AdamW", "activations", "total",
                f"activations, checkpointing {other}", f"total, checkpointing {other}"):
        mem.add_column(col, justify="right")
    for stage, m in summary["memory_gib"].items():
        o = summary["memory_gib_other_checkpointing"][stage]
        mem.add_row(stage, *(f"{m[k]:.2f}" for k in ("weights", "grads_and_optimizer", "activations", "total")),
                    f"{o['activations']:.2f}", f"{o['total']:.2f}")
    console.print(mem)
    console.print(f"gradient checkpointing (model.gradient_checkpointing={str(gc).lower()}) recomputes the"
                  " encoder, resampler and LLM layers in backward: same gradients, ~1.2-1.5x step time.", highlight=False)
    for note in summary["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("model-summary")(model_summary_command)
