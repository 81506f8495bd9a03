"""Benchmark: the caption-metric suite, cora-kit vs pycocoevalcap run metric by metric.

Data: N synthetic predictions x 3 references (5,000 by default, the issue's size;
``--quick``: 1,000), fixed seed. Metrics: BLEU-4, METEOR, ROUGE-L, CIDEr (SPICE too
when its CoreNLP jars are installed; otherwise it is left out of both sides).

- cora-kit: ``cora_kit.eval.scoring.score`` - one PTB tokenisation for all metrics, the
  METEOR JVM started first and scored on a worker thread while the Python metrics run.
- peer (the way the CORA paper's code ran them): for each metric, pycocoevalcap's
  ``PTBTokenizer`` on references and on predictions, then the metric's
  ``compute_score`` (METEOR through pycocoevalcap's ``Meteor`` class).

Both sides must give the same numbers (checked). Ratio = peer time / cora-kit time
(above 1: cora-kit is faster). Timings taken while other processes load the CPU are
noisy; both sides run in the same process, one after the other, ``--repeats`` times
(median).

    python benchmarks/eval.py [--quick] [--n 5000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

VOCAB = (
    "a an the man woman child dog cat bird car bus tree building street road sky cloud"
    " mountain river lake beach people group sits stands walks runs rides holds looks at"
    " on in near under behind next to with of red blue green white black large small tall"
    " old new two three several many , ."
).split()


def make_data(n: int, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each id: a base sentence; 3 references and the prediction are noisy copies of it."""
    rng = random.Random(seed)

    def noisy(words: list[str], p: float) -> str:
        return " ".join(rng.choice(VOCAB) if rng.random() < p else w for w in words).capitalize()

    preds: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    for i in range(n):
        base = [rng.choice(VOCAB) for _ in range(rng.randint(6, 16))]
        key = f"pano{i:05d}_q{i % 7}"
        refs[key] = [noisy(base, 0.25) for _ in range(3)]
        preds[key] = noisy(base, 0.4)
    return preds, refs


def run_cora_kit(preds, refs, metrics) -> tuple[float, dict[str, float]]:
    from cora_kit.eval.scoring import score

    start = time.perf_counter()
    report = score(preds, refs, metrics, strict=True)
    return time.perf_counter() - start, report.values


def run_peer(preds, refs, metrics) -> tuple[float, dict[str, float], dict[str, float]]:
    """pycocoevalcap, one metric at a time, each with its own tokenisation."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.spice.spice import Spice
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scorers = {"bleu4": Bleu, "meteor": Meteor, "rouge_l": Rouge, "cider": Cider, "spice": Spice}
    values: dict[str, float] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for name in metrics:
        t0 = time.perf_counter()
        tok = PTBTokenizer()
        gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
        res = tok.tokenize({k: [{"caption": v}] for k, v in preds.items()})
        scorer = scorers[name]()
        if name == "bleu4":
            value = scorer.compute_score(gts, res, verbose=0)[0][3]
        else:
            value = scorer.compute_score(gts, res)[0]
        if name == "meteor":  # avoid Meteor.__del__ at exit: stop its JVM here
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
        values[name] = float(value)
        seconds[name] = time.perf_counter() - t0
    return time.perf_counter() - start, values, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 predictions (under ~2 minutes)")
    parser.add_argument("--n", type=int, default=None, help="number of predictions (default 5000)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    n = args.n or (1000 if args.quick else 5000)

    import cora_kit
    from cora_kit_builtins.metrics.ptb import install_dir_writable

    ok, why = install_dir_writable()
    if not ok:
        raise SystemExit(f"cannot run the pycocoevalcap peer: {why}")
    metrics = ["bleu4", "meteor", "rouge_l", "cider"]
    spice_ok, spice_why = cora_kit.create("metric", "spice").available()
    if spice_ok:
        metrics.append("spice")
    preds, refs = make_data(n)

    ours_t, peer_t = [], []
    peer_split: dict[str, float] = {}
    for _ in range(args.repeats):
        t, ours = run_cora_kit(preds, refs, metrics)
        ours_t.append(t)
        t, peer, peer_split = run_peer(preds, refs, metrics)
        peer_t.append(t)
        for name in metrics:
            if abs(ours[name] - peer[name]) > 1e-9:
                raise SystemExit(f"{name}: cora-kit {ours[name]!r} != pycocoevalcap {peer[name]!r}")
    ours_s, peer_s = statistics.median(ours_t), statistics.median(peer_t)

    print(f"caption metrics on {n} predictions x 3 references ({', '.join(metrics)});"
          f" {os.cpu_count()} CPUs, shared: timings are noisy")
    if not spice_ok:
        print(f"spice left out of both sides: {spice_why}")
    print(f"{'side':<44}{'seconds':>10}")
    print(f"{'cora-kit score() (1 tokenisation, JVM overlap)':<44}{ours_s:>10.2f}")
    print(f"{'pycocoevalcap, metric by metric':<44}{peer_s:>10.2f}")
    for name, sec in peer_split.items():
        print(f"{'  peer ' + name + ' (incl. its tokenisation)':<44}{sec:>10.2f}")
    print(f"{'values':<14}" + "  ".join(f"{m}={ours[m]:.4f}" for m in metrics) + "  (equal on both sides)")
    print(f"ratio peer / cora-kit: {peer_s / ours_s:.2f}x")
    print(json.dumps({
        "bench": "eval",
        "n": n,
        "references_per_item": 3,
        "metrics": metrics,
        "peer": "pycocoevalcap 1.2, one metric at a time with its own PTB tokenisation",
        "cora_kit_s": round(ours_s, 3),
        "peer_s": round(peer_s, 3),
        "speedup_vs_peer": round(peer_s / ours_s, 3),
        "equal_values": True,
    }))


if __name__ == "__main__":
    main()
