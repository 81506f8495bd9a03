"""Training-step time and peak memory of the whole CORA model, per stage.

Builds a preset with random init (``paper`` on CUDA: SigLIP2 so400m + BiMamba + Qwen3-0.6B,
1,408 vision tokens; ``tiny`` on CPU), and times one optimizer step (forward, backward,
AdamW) of each stage at a given batch size. Peer, measured in the same run: the same LLM
step on the text alone (no vision tokens), which shows what the vision tokens cost.

    python benchmarks/model_step.py [--quick] [--preset paper] [--batch-size 1] [--bf16]

Last line: ``{"bench": "model_step", ...}`` with ``stage2_vs_text_only`` (ratio of step times).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from cora_kit.config import resolve_config
from cora_kit.commands.model_summary import memory_estimate
from cora_kit.pipeline import CoraModel

QUERY = "what is on the left of the viewer?"
ANSWER = "a red cube and a blue ball on the ground"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device, reps: int) -> tuple[float, float | None]:
    """(median seconds, peak GiB or None on CPU) of ``fn`` after one warm-up."""
    fn()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else None
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or ("paper" if device.type == "cuda" else "tiny")
    reps = 2 if args.quick else args.reps
    overrides = list(args.overrides)
    if preset != "tiny":
        overrides += ["model.encoder.options.random_init=true", "model.llm.options.random_init=true"]
    config = resolve_config(preset, overrides=overrides)
    t0 = time.perf_counter()
    model = CoraModel.from_config(config, device=device)
    build_s = time.perf_counter() - t0
    B = args.batch_size
    erp = torch.rand(B, 3, 256, 512, device=device)
    queries, answers = [QUERY] * B, [ANSWER] * B
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    rows = []
    for stage in (1, 2, 3):
        model.set_stage(stage)
        model.train()
        groups = model.param_groups(stage, getattr(config.stages, f"stage{stage}"))
        opt = torch.optim.AdamW(groups)
        with torch.no_grad(), autocast:
            hidden = model.encode_frozen(model.tile(erp), stage)

        def step() -> None:
            with autocast:
                feats = model.encode_trainable(hidden, stage)
                if stage == 3:
                    with torch.no_grad():
                        latent = model.resample(feats)
                else:
                    latent = model.resample(feats)
                if stage == 1:
                    loss = model.overlap_loss(latent)[0]
                else:
                    loss = model.lm_loss(latent, queries, answers)[0]
                    if stage == 2:
                        loss = loss + 0.1 * model.overlap_loss(latent)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        sec, peak = _timed(step, device, reps)
        est = memory_estimate(model, stage, B, 2 if args.bf16 else 4)["total"]
        rows.append({"stage": stage, "step_s": sec, "peak_gib": peak, "estimate_gib": est})
        del opt

    # peer: the LLM step on text only (same fusion, zero vision tokens), Stage 3 schedule
    model.set_stage(3)
    llm = model.llm
    ids = llm.tokenizer([f"{QUERY} {ANSWER}"] * B, return_tensors="pt")["input_ids"].to(device)
    opt = torch.optim.AdamW(llm.lora_parameters())

    def text_step() -> None:
        with autocast:
            out = llm(llm.embed_tokens(ids), torch.ones_like(ids), labels=ids)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    text_s, _ = _timed(text_step, device, reps)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"model_step: preset {preset}, device {name}, batch {B}, {'bf16 autocast' if args.bf16 else 'fp32'}, "
          f"{model.projector.num_tokens} vision tokens, resampler backend {model.plugin_metadata()['resampler']['backend']}, "
          f"build {build_s:.1f} s")
    print(f"{'stage':>6} {'step (s)':>10} {'peak GiB':>10} {'estimate GiB':>13}")
    for r in rows:
        peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"{r['stage']:>6} {r['step_s']:>10.3f} {peak:>10} {r['estimate_gib']:>13.2f}")
    print(f"{'text':>6} {text_s:>10.3f}   (peer: LLM step on text only, no vision tokens)")
    result = {
        "bench": "model_step",
        "preset": preset,
        "device": name,
        "batch_size": B,
        "bf16": args.bf16,
        "vision_tokens": model.projector.num_tokens,
        **{f"stage{r['stage']}_step_s": round(r["step_s"], 4) for r in rows},
        **{f"stage{r['stage']}_peak_gib": None if r["peak_gib"] is None else round(r["peak_gib"], 3) for r in rows},
        "text_only_step_s": round(text_s, 4),
        "stage2_vs_text_only": round(rows[1]["step_s"] / text_s, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
