"""The README's main job, measured as a user runs it: wall time and whether the model looks.

    python benchmarks/main_job.py [--quick] [--seeds 3,4,5] [--set key=value ...] [--keep DIR]

Each seed runs ``cora-kit run --resampler bimamba --loss densecl --seed S`` in a fresh
folder (a fresh clone's state: the synthetic set is generated inside the timed run), as its
own process. Exact match is computed here from the files the run writes (``predictions.jsonl``
and ``predictions_<control>.jsonl`` against ``references.jsonl``), not read from scores.json;
the trained-minus-shuffled difference gets a paired bootstrap 95% CI over the test items.
Reported per seed: wall and CPU seconds (the run's process tree), the 1-minute load average
before and after (the machine is shared), and exact match trained / shuffled / blank / text
prior, overall and per query kind. The peer is the shuffled-panorama control of the same run.
Last line: {"bench": "main_job", ...} with the means, the seed-to-seed sd and the margins.

``--quick`` (< ~2 minutes): a tiny set and a few steps; it checks the harness, not the preset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTROLS = ("shuffled", "blank", "text_prior")
QUICK = [
    "data.synth.n_train=24", "data.synth.n_val=4", "data.synth.n_test=8",
    "stages.stage1.max_steps=2", "stages.stage2.max_steps=4", "stages.stage3.max_steps=2",
]


def exact_match_by_kind(run: Path, name: str) -> tuple[dict[str, float], dict[str, float]]:
    """(per-item values, {"all": mean, kind: mean}) of one predictions file of ``run``."""
    import cora_kit
    from cora_kit.eval.scoring import read_kinds, read_predictions, read_references

    refs = read_references(run / "references.jsonl")
    kinds = read_kinds(run / "references.jsonl")
    items = cora_kit.create("metric", "exact-match").score_items(read_predictions(run / name), refs)
    out = {"all": sum(items.values()) / len(items)}
    for kind in sorted(set(kinds.values())):
        vals = [v for k, v in items.items() if kinds.get(k) == kind]
        out[kind] = sum(vals) / len(vals)
    return items, out


def run_seed(seed: int, sets: list[str], root: Path, share: Path | None = None) -> dict:
    from cora_kit.bench.stats import paired_bootstrap_ci

    cmd = [sys.executable, "-m", "cora_kit", "run", "--resampler", "bimamba", "--loss", "densecl",
           "--seed", str(seed), "--name", f"seed{seed}", "--out", "runs"]
    if share is not None:  # tuning only: reuse a generated set and the frozen-encoder cache
        share.mkdir(parents=True, exist_ok=True)
        cmd += ["--feature-cache", str(share / "feature-cache")]
        sets = [f"data.synth_dir={share / 'synth'}", *sets]
    for s in sets:
        cmd += ["--set", s]
    load0 = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    log = root / f"seed{seed}.log"
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=root, stdout=fh, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    run = root / "runs" / f"seed{seed}"
    trained_items, trained = exact_match_by_kind(run, "predictions.jsonl")
    row = {"seed": seed, "wall_s": wall, "load_before": load0, "load_after": os.getloadavg()[0],
           "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
           "n_items": len(trained_items), "em": {"trained": trained}}
    for control in CONTROLS:
        items, em = exact_match_by_kind(run, f"predictions_{control}.jsonl")
        row["em"][control] = em
        if control == "shuffled":
            deltas = [trained_items[k] - items[k] for k in trained_items]
            mean, lo, hi = paired_bootstrap_ci(deltas)
            row["margin_shuffled"] = {"mean": mean, "ci_low": lo, "ci_high": hi}
    row["stage_s"] = {
        k: round(json.loads((run / f"stage{k}" / "done.json").read_text())["seconds"], 1) for k in (1, 2, 3)
        if (run / f"stage{k}" / "done.json").is_file()
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny set, few steps (checks the harness)")
    ap.add_argument("--seeds", default="3,4,5", help="comma-separated seeds (default 3,4,5: not the README's)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders under this directory")
    ap.add_argument("--share", type=Path, default=None,
                    help="tuning only: generate the set and the frozen-encoder cache once under this folder"
                         " (the timed runs then exclude data generation)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    sets = (QUICK if args.quick else []) + list(args.set)
    rows = []
    for seed in seeds:
        if args.keep is not None:
            root = args.keep / f"seed{seed}"
            root.mkdir(parents=True, exist_ok=True)
            rows.append(run_seed(seed, sets, root, args.share))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run_seed(seed, sets, Path(tmp), args.share))
        r = rows[-1]
        m = r["margin_shuffled"]
        print(f"seed {seed}: wall {r['wall_s']:.0f} s (stages {r['stage_s']}), cpu {r['cpu_s']:.0f} s, "
              f"load {r['load_before']:.1f}->"
              f"{r['load_after']:.1f}; exact match trained {r['em']['trained']['all']:.3f}, "
              + ", ".join(f"{c} {r['em'][c]['all']:.3f}" for c in CONTROLS)
              + f"; trained - shuffled {m['mean']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]", flush=True)
    kinds = [k for k in rows[0]["em"]["trained"] if k != "all"]
    print(f"\n{'kind':<15}" + "".join(f"{c:>12}" for c in ("trained", *CONTROLS)) + "   (mean over seeds)")
    for kind in ["all", *kinds]:
        vals = [statistics.mean(r["em"][c][kind] for r in rows) for c in ("trained", *CONTROLS)]
        print(f"{kind:<15}" + "".join(f"{v:>12.3f}" for v in vals))
    trained = [r["em"]["trained"]["all"] for r in rows]
    summary = {
        "bench": "main_job",
        "seeds": seeds,
        "n_items": rows[0]["n_items"],
        "em_trained_mean": round(statistics.mean(trained), 4),
        "em_trained_sd": round(statistics.stdev(trained), 4) if len(trained) > 1 else None,
        **{f"em_{c}_mean": round(statistics.mean(r["em"][c]["all"] for r in rows), 4) for c in CONTROLS},
        "margin_vs_shuffled": [round(r["margin_shuffled"]["mean"], 4) for r in rows],
        "margin_ci_low": [round(r["margin_shuffled"]["ci_low"], 4) for r in rows],
        "wall_s": [round(r["wall_s"], 1) for r in rows],
        "cpu_s": [round(r["cpu_s"], 1) for r in rows],
        "load_1min": [[round(r["load_before"], 2), round(r["load_after"], 2)] for r in rows],
        "overrides": sets,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
