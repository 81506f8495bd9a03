"""Gradient checkpointing at the paper's shapes: activations kept and step time, with and
without (the peer: the same component, same weights and input, no checkpointing).

    python benchmarks/grad_checkpointing.py [--quick] [--llm-layers N]

Per component of the paper preset (random init, fp32, batch 1 panorama): the trainable
SigLIP2-so400m blocks (k=2) on the 8 tiles [8,256,1152]; the BiMamba resampler (seed
config, torch scan) on the same; the Qwen3-0.6B decoder on 1,408 vision + 24 text tokens,
frozen (Stage 2: gradients flow to the inputs) and with LoRA r32 (Stage 3). "saved" counts
the distinct storages autograd keeps between forward and backward
(``cora_kit.train.autobatch.saved_activation_bytes``, parameters excluded): what the
checkpointed model no longer holds, independent of the device. Per-layer coefficients
(values per token per layer / width) are printed next to the ones ``cora-kit
model-summary`` uses. Layer counts are reduced (``--llm-layers``, default 4 of 28) since
per-layer numbers do not depend on depth. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import cora_kit
from cora_kit.train.autobatch import saved_activation_bytes

TEXT_TOKENS = 24


def _measure(module: Any, fn: Callable[[], torch.Tensor], enabled: bool, setter: Callable[[bool], Any],
             reps: int) -> dict[str, float]:
    setter(enabled)
    params = list(module.parameters())
    outs: list[torch.Tensor] = []
    saved = saved_activation_bytes(lambda: outs.append(fn()), params)
    out = outs.pop()
    (out.float().square().mean() if out.dim() else out).backward()
    times = []
    for _ in range(reps):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        out = fn()
        (out.float().square().mean() if out.dim() else out).backward()
        times.append(time.perf_counter() - t0)
    return {"saved_bytes": saved, "fwd_bwd_s": min(times)}


def _row(key: str, name: str, off: dict, on: dict, tokens: int, width: int, layers: int) -> dict[str, Any]:
    per_value = 4 * tokens * width
    return {
        "key": key, "component": name, "layers": layers,
        "saved_mib_off": off["saved_bytes"] / 2**20, "saved_mib_on": on["saved_bytes"] / 2**20,
        "saved_ratio": on["saved_bytes"] / max(off["saved_bytes"], 1),
        "coef_per_layer_off": off["saved_bytes"] / per_value / layers,
        "coef_per_layer_on": on["saved_bytes"] / per_value / layers,
        "time_off_s": off["fwd_bwd_s"], "time_on_s": on["fwd_bwd_s"],
        "time_ratio": on["fwd_bwd_s"] / off["fwd_bwd_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 LLM layers, 2 tiles, one timing rep")
    ap.add_argument("--llm-layers", type=int, default=None, help="Qwen3-0.6B layers built (default 4; paper 28)")
    ap.add_argument("--tiles", type=int, default=None, help="views through encoder/resampler (paper Stage 1: 8)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    n_llm = args.llm_layers or (2 if args.quick else 4)
    tiles = args.tiles or (2 if args.quick else 8)
    reps = 1 if args.quick else 2
    print(f"grad_checkpointing: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus; paper shapes, {tiles} tiles, LLM {n_llm} layers; load {os.getloadavg()}", flush=True)
    rows = []

    enc = cora_kit.create("encoder", "siglip2", random_init=True, arch={"num_hidden_layers": 2})
    enc.train()
    hidden = torch.randn(tiles, 256, enc.hidden_size)

    def enc_fn() -> torch.Tensor:
        return enc.forward_trainable(hidden, 2)

    res = {e: _measure(enc, enc_fn, e, enc.set_gradient_checkpointing, reps) for e in (False, True)}
    rows.append(_row("encoder", "encoder (2 trainable blocks)", res[False], res[True], tiles * 256, enc.hidden_size, 2))
    print(f"  {rows[-1]}", flush=True)
    del enc

    bim = cora_kit.create("resampler", "bimamba", backend="torch")
    bim.train()
    x = torch.randn(tiles, 256, 1152, requires_grad=True)

    def bim_fn() -> torch.Tensor:
        return bim(x, (16, 16))

    res = {e: _measure(bim, bim_fn, e, bim.set_gradient_checkpointing, reps) for e in (False, True)}
    rows.append(_row("resampler", "bimamba resampler (4 layers, torch scan)", res[False], res[True], tiles * 256, 1024, 4))
    print(f"  {rows[-1]}", flush=True)
    del bim

    for stage in (2, 3):
        llm = cora_kit.create("llm", "qwen3", random_init=True, arch={"num_hidden_layers": n_llm,
                                                                     "max_window_layers": n_llm})
        llm.enable_lora(32, 64, 0.1, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        for n, p in llm.named_parameters():
            p.requires_grad_(stage == 3 and "lora_" in n)
        if stage == 2:
            llm.set_lora_active(False)
            llm.eval()  # frozen in Stage 2 (the pipeline keeps it in eval mode)
        else:
            llm.train()
        L = 1408 + TEXT_TOKENS
        emb = torch.randn(1, L, llm.hidden_size, requires_grad=stage == 2)
        mask = torch.ones(1, L, dtype=torch.long)

        def llm_fn() -> torch.Tensor:
            hs = llm.model.base_model.model.model(inputs_embeds=emb, attention_mask=mask, use_cache=False)
            return hs.last_hidden_state

        def set_llm(enabled: bool) -> None:
            llm.set_gradient_checkpointing(enabled)
            llm.train(stage == 3)  # the frozen Stage-2 LM stays in eval mode, checkpointed all the same

        res = {e: _measure(llm, llm_fn, e, set_llm, reps) for e in (False, True)}
        label = "qwen3 decoder, frozen (Stage 2)" if stage == 2 else "qwen3 decoder + LoRA r32 (Stage 3)"
        rows.append(_row(f"llm_stage{stage}", label, res[False], res[True], L, llm.hidden_size, n_llm))
        print(f"  {rows[-1]}", flush=True)
        del llm

    from cora_kit.commands import model_summary as sm

    print(f"\n{'component':<42}{'saved MiB off':>14}{'on':>9}{'ratio':>7}{'coef/layer off':>16}{'on':>7}"
          f"{'time off s':>11}{'on':>7}{'x':>6}")
    for r in rows:
        print(f"{r['component']:<42}{r['saved_mib_off']:>14.1f}{r['saved_mib_on']:>9.1f}{r['saved_ratio']:>7.3f}"
              f"{r['coef_per_layer_off']:>16.1f}{r['coef_per_layer_on']:>7.2f}{r['time_off_s']:>11.2f}"
              f"{r['time_on_s']:>7.2f}{r['time_ratio']:>6.2f}")
    print(f"model-summary coefficients: LLM layer {sm.ACT_LLM_LAYER} (+{sm.ACT_LORA_LAYER} LoRA), encoder block "
          f"{sm.ACT_ENCODER_BLOCK}, checkpointed layer {sm.ACT_CHECKPOINTED_LAYER} (its input)")
    result = {"bench": "grad_checkpointing", "quick": bool(args.quick), "llm_layers": n_llm, "tiles": tiles,
              **{f"{r['key']}_{k}": round(v, 4) if isinstance(v, float) else v
                 for r in rows for k, v in r.items()
                 if k in ("saved_ratio", "time_ratio", "coef_per_layer_off", "coef_per_layer_on")}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
