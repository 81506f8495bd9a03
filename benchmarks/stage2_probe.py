"""Does the LM learn to look? Stage 2 alone, on the Stage-1 output of a finished run.

The tool behind benchmarks/RESULTS.md "A tiny preset that looks": it takes a folder a main
job ran in (``benchmarks/main_job.py --keep DIR`` leaves ``DIR/seed<k>``: ``data/``,
``runs/<name>/stage1``, ``runs/.feature-cache``), rebuilds the run's model, loads its Stage-1
weights, and trains Stage 2 only on the cached frozen-encoder features of the training split,
with the settings given here. Every ``--every`` steps it scores the first ``--test-items``
test items by exact match (greedy) on the true panoramas and on panoramas shuffled across
items (features rolled by 4), per query kind, and the vision tokens' "spread": the across-image
standard deviation of the projected tokens over their total standard deviation (near 0: the
tokens no longer depend on the image).

    python benchmarks/stage2_probe.py --run /tmp/mj/seed3 --steps 1500 --every 250
    python benchmarks/stage2_probe.py --run /tmp/mj/seed3 --kinds seam,tile-boundary \\
        --set model.llm.vision_placement=before-query --vision-lr-scale 1
    python benchmarks/stage2_probe.py --quick      # makes a small Stage-1 run first (~1-2 min)

Last line: ``{"bench": "stage2_probe", "em": ..., "em_shuffled": ..., "ratio_vs_shuffled": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cora_kit.config import resolve_config
from cora_kit.data.text import matches
from cora_kit.pipeline import CoraModel
from cora_kit.train import checkpoint as ckpt
from cora_kit.train.data import load_splits
from cora_kit.train.stages import FeatureProvider, stage2_step, warmup_cosine

QUICK_RUN = ["--stages", "1", "--set", "data.synth.n_train=64", "--set", "data.synth.n_val=4",
             "--set", "data.synth.n_test=16", "--set", "stages.stage1.max_steps=4"]


def quick_run(root: Path) -> Path:
    """A small Stage-1-only main job in ``root`` (its own synthetic set)."""
    cmd = [sys.executable, "-m", "cora_kit", "run", "--name", "probe", "--plain", *QUICK_RUN]
    subprocess.run(cmd, cwd=root, check=True, stdout=subprocess.DEVNULL)
    return root


def find_run(folder: Path) -> Path:
    """``folder/runs/<name>`` holding ``config.yaml`` and a finished ``stage1``."""
    runs = sorted(p for p in (folder / "runs").glob("*") if (p / "config.yaml").is_file() and ckpt.is_done(p / "stage1"))
    if not runs:
        raise SystemExit(f"error: {folder}/runs holds no run with a finished Stage 1 (give the folder a main job ran in)")
    return runs[0]


def evaluate(model: CoraModel, feats: torch.Tensor, test: list[dict], max_new_tokens: int) -> dict:
    """Exact match on true and shuffled features, per kind, and the vision tokens' spread."""
    model.eval()
    out: dict = {}
    with torch.no_grad():
        tokens = model.projector(model.resample(model.encode_trainable(feats[:64], 2))).tokens
        out["spread"] = float(tokens.std(0).mean() / tokens.std((0, 1)).mean())
        for name, f in (("em", feats), ("em_shuffled", torch.roll(feats, 4, 0))):
            hits, kinds = [], {}
            for i in range(0, len(test), 64):
                batch = test[i : i + 64]
                latent = model.resample(model.encode_trainable(f[i : i + 64], 3))
                texts = model.generate(latent, [x["query"] for x in batch], max_new_tokens=max_new_tokens)
                for x, t in zip(batch, texts, strict=True):
                    h = matches(t, x["references"])
                    hits.append(h)
                    kinds.setdefault(x.get("kind") or "-", []).append(h)
            out[name] = sum(hits) / len(hits)
            out[f"{name}_kinds"] = {k: round(sum(v) / len(v), 3) for k, v in sorted(kinds.items())}
    model.train()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="folder a main job ran in (holds data/ and runs/)")
    ap.add_argument("--quick", action="store_true", help="make a small Stage-1 run and probe it for a few steps")
    ap.add_argument("--steps", type=int, default=None, help="Stage-2 steps (default 1500; --quick 30)")
    ap.add_argument("--every", type=int, default=None, help="evaluate every N steps (default 250)")
    ap.add_argument("--lr", type=float, default=1e-3, help="the LM's lr")
    ap.add_argument("--vision-lr-scale", type=float, default=0.0,
                    help="resampler and projector lr as a share of --lr (0: held, as the tiny preset)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--kinds", default=None, help="comma-separated query kinds to train and test on")
    ap.add_argument("--test-items", type=int, default=256)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.run is None and not a.quick:
        ap.error("give --run (a folder a main job ran in, e.g. from benchmarks/main_job.py --keep) or --quick")
    steps = a.steps or (30 if a.quick else 1500)
    every = a.every or (15 if a.quick else 250)
    torch.set_num_threads(a.threads)
    folder = a.run or quick_run(Path(tempfile.mkdtemp(prefix="stage2-probe-")))
    run_dir = find_run(folder.resolve())
    os.chdir(run_dir.parent.parent)  # the run's relative data path
    cfg = resolve_config(None, run_dir / "config.yaml", ["device=cpu", *a.set])
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    model = CoraModel.from_config(cfg)
    model.set_stage(1)
    model.load_trainable_state_dict(ckpt.load_final(run_dir / "stage1"), strict=True)
    splits = load_splits(cfg)
    train, test = list(splits.train), list(splits.test)
    if a.kinds:
        chosen = set(a.kinds.split(","))
        train = [x for x in train if x.get("kind") in chosen]
        test = [x for x in test if x.get("kind") in chosen]
    test = test[: a.test_items]
    provider = FeatureProvider(model, 2, str(run_dir.parent / ".feature-cache"), torch.device("cpu"), 64)

    def features(items: list[dict]) -> torch.Tensor:
        return torch.cat([provider.features(items[i : i + 64]) for i in range(0, len(items), 64)])

    f_train, f_test = features(train), features(test)
    model.set_stage(2)
    model.train()
    scfg = cfg.stages.stage2.model_copy(update={
        "lr": a.lr, "resampler_lr_scale": a.vision_lr_scale, "projector_lr_scale": a.vision_lr_scale,
        "overlap_weight": 0.0 if a.vision_lr_scale == 0 else cfg.stages.stage2.overlap_weight})
    if cfg.model.llm.trainable != "full":
        raise SystemExit("error: the probe trains the LM: it needs model.llm.trainable=full (the tiny preset)")
    groups = model.param_groups(2, scfg)
    print(f"run {run_dir}; {len(train)} train / {len(test)} test items; groups "
          + ", ".join(f"{g['name']} lr {g['lr']:.1e}" for g in groups), flush=True)
    opt = torch.optim.AdamW(groups, lr=a.lr, weight_decay=scfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, scfg.warmup_ratio))
    params = [p for g in groups for p in g["params"]]
    print(f"{'step':>6} {'train_ce':>9} {'em':>6} {'shuffled':>9} {'spread':>7}  per kind (em)")
    order, pos, window, last, t0 = list(range(len(train))), len(train), [], {}, time.time()
    for step in range(1, steps + 1):
        idx = []
        for _ in range(a.batch_size):
            if pos == len(order):
                random.shuffle(order)
                pos = 0
            idx.append(order[pos])
            pos += 1
        loss, logs = stage2_step(model, f_train[idx], [train[i] for i in idx], scfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        window.append(logs["lm_loss"])
        if step % every == 0 or step == steps:
            last = evaluate(model, f_test, test, cfg.eval.max_new_tokens)
            print(f"{step:>6} {sum(window) / len(window):>9.3f} {last['em']:>6.3f} {last['em_shuffled']:>9.3f}"
                  f" {last['spread']:>7.3f}  {last['em_kinds']}  ({time.time() - t0:.0f} s)", flush=True)
            window = []
    print(json.dumps({
        "bench": "stage2_probe", "steps": steps, "n_test": len(test), "em": round(last["em"], 4),
        "em_shuffled": round(last["em_shuffled"], 4), "margin": round(last["em"] - last["em_shuffled"], 4),
        "ratio_vs_shuffled": round(last["em"] / last["em_shuffled"], 3) if last["em_shuffled"] else None,
        "spread": round(last["spread"], 3), "kinds": last["em_kinds"], "seconds": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
