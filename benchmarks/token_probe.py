"""What do the vision tokens the LM reads hold? A linear probe of each object's colour and shape.

For a folder a main job ran in (``benchmarks/main_job.py --keep DIR`` leaves ``DIR/seed<k>``,
on the synthetic set v2), this script rebuilds the run's model and computes the projected vision
tokens ``[T, D_lm]`` (panorama PE included: what the LM reads) of training and test panoramas.
It does this twice: with the run's Stage-1 weights, and at random init (no Stage 1). For every
object of each scene (``scenes.jsonl``) it takes the stitched token nearest to the object's
centre. Horizon objects use the tiles' tokens; the object high above (latitude > 45 deg) uses
the global view's tokens. Multinomial logistic regression (L-BFGS, L2 ``--l2``, standardised
tokens) is trained on the training objects and scored on the test objects. The peer is the
majority class of the training objects: a token that does not hold the label cannot beat it.

    python benchmarks/token_probe.py --run /tmp/mj/seed6          # ~1 minute on 2 cores
    python benchmarks/token_probe.py --quick                       # a small Stage-1 run first

Last line: ``{"bench": "token_probe", "rows": [...], "ratio_vs_majority": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import torch

from cora_kit.config import resolve_config
from cora_kit.pipeline import CoraModel
from cora_kit.train import checkpoint as ckpt
from cora_kit.train.data import load_splits
from cora_kit.train.stages import FeatureProvider
from stage2_probe import find_run, quick_run  # this folder: the same run lookup and --quick run

#: latitude (deg) above which an object is "high above" (the synthetic set puts it at 63-70)
HIGH_LAT = 45.0


def one_item_per_image(items: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for x in items:
        if x["image_path"] not in seen:
            seen.add(x["image_path"])
            out.append(x)
    return out


def vision_tokens(model: CoraModel, provider: FeatureProvider, items: list[dict]) -> torch.Tensor:
    """``[N, T, D_lm]``: the projected, stitched vision tokens of ``items``' panoramas."""
    out = []
    with torch.no_grad():
        for i in range(0, len(items), 64):
            feats = provider.features(items[i : i + 64])
            out.append(model.projector(model.resample(model.encode_trainable(feats, 2))).tokens)
    return torch.cat(out)


def global_tokens(model: CoraModel) -> torch.Tensor:
    """``[T]`` bool: which stitched tokens come from the global view."""
    views = model.projector.layout.views
    return torch.tensor([views[int(v)].is_global for v in model.projector.positions.view])


def nearest_token(model: CoraModel, is_global: torch.Tensor, lon_deg: float, lat_deg: float, global_view: bool) -> int:
    """Index of the stitched token nearest to (lon, lat), among the global view's or the tiles'."""
    pos = model.projector.positions
    dlon = torch.remainder(pos.lon - math.radians(lon_deg) + math.pi, 2 * math.pi) - math.pi
    dist = (dlon * torch.cos(pos.lat)) ** 2 + (pos.lat - math.radians(lat_deg)) ** 2
    dist[is_global != global_view] = float("inf")
    return int(dist.argmin())


def labelled(model: CoraModel, scenes: dict[str, dict], items: list[dict], tokens: torch.Tensor,
             label: str, high: bool) -> tuple[torch.Tensor, list[str]]:
    """(token ``[M, D_lm]``, label) of every object of ``items`` on the horizon (or high above)."""
    xs, ys = [], []
    is_global = global_tokens(model)
    for item, toks in zip(items, tokens, strict=True):
        for obj in scenes[Path(item["image_path"]).name]["scene"]["objects"]:
            if (obj["lat"] > HIGH_LAT) != high:
                continue
            xs.append(toks[nearest_token(model, is_global, obj["lon"], obj["lat"], high)])
            ys.append(str(obj[label]))
    if not xs:
        raise SystemExit(f"error: no {'high' if high else 'horizon'} objects in these scenes")
    return torch.stack(xs), ys


def probe(train: tuple[torch.Tensor, list[str]], test: tuple[torch.Tensor, list[str]], l2: float) -> dict:
    """Logistic regression on standardised tokens: train/test accuracy and the majority class's."""
    (xtr, ytr), (xte, yte) = train, test
    classes = sorted(set(ytr))
    index = {c: i for i, c in enumerate(classes)}
    ttr = torch.tensor([index[c] for c in ytr])
    tte = torch.tensor([index.get(c, -1) for c in yte])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    w = torch.zeros(a.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=300)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + bias, ttr) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        acc_train = float(((a @ w + bias).argmax(1) == ttr).float().mean())
        acc_test = float(((b @ w + bias).argmax(1) == tte).float().mean())
    majority = max(classes, key=ytr.count)
    return {"classes": len(classes), "n_train": len(ytr), "n_test": len(yte), "train": acc_train, "test": acc_test,
            "majority": sum(y == majority for y in yte) / len(yte)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="folder a main job ran in (holds data/ and runs/)")
    ap.add_argument("--quick", action="store_true", help="make a small Stage-1 run and probe it")
    ap.add_argument("--train-images", type=int, default=1200, help="training panoramas the probe fits on")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.run is None and not a.quick:
        ap.error("give --run (a folder a main job ran in, e.g. from benchmarks/main_job.py --keep) or --quick")
    torch.set_num_threads(a.threads)
    folder = a.run or quick_run(Path(tempfile.mkdtemp(prefix="token-probe-")))
    run_dir = find_run(folder.resolve())
    os.chdir(run_dir.parent.parent)  # the run's relative data path
    cfg = resolve_config(None, run_dir / "config.yaml", ["device=cpu"])
    scenes_file = Path(cfg.data.synth_dir) / "scenes.jsonl"
    if cfg.data.path is not None or not scenes_file.is_file():
        raise SystemExit(f"error: the probe needs the synthetic set's scenes ({scenes_file}); {run_dir} has none")
    scenes = {Path(s["image"]).name: s for s in map(json.loads, scenes_file.read_text().splitlines())}
    splits = load_splits(cfg)
    train, test = one_item_per_image(list(splits.train))[: a.train_images], one_item_per_image(list(splits.test))
    rows = []
    for weights in ("stage 1", "random init"):
        torch.manual_seed(0)
        model = CoraModel.from_config(cfg)
        model.set_stage(1)
        if weights == "stage 1":
            model.load_trainable_state_dict(ckpt.load_final(run_dir / "stage1"), strict=True)
        model.eval()
        provider = FeatureProvider(model, 2, str(run_dir.parent / ".feature-cache"), torch.device("cpu"), 64)
        tok_train, tok_test = vision_tokens(model, provider, train), vision_tokens(model, provider, test)
        for label in ("colour", "shape"):
            for high in (False, True):
                got = probe(labelled(model, scenes, train, tok_train, label, high),
                            labelled(model, scenes, test, tok_test, label, high), a.l2)
                rows.append({"weights": weights, "label": label, "where": "high" if high else "horizon", **got})
    print(f"run {run_dir}; {len(train)} training / {len(test)} test panoramas")
    print(f"{'weights':<12} {'label':<7} {'objects':<8} {'classes':>7} {'n train':>8} {'n test':>7}"
          f" {'majority':>9} {'train':>6} {'test':>6}")
    for r in rows:
        print(f"{r['weights']:<12} {r['label']:<7} {r['where']:<8} {r['classes']:>7} {r['n_train']:>8} {r['n_test']:>7}"
              f" {r['majority']:>9.3f} {r['train']:>6.3f} {r['test']:>6.3f}")
    ratios = {f"{r['weights']}/{r['label']}/{r['where']}": round(r["test"] / r["majority"], 3) if r["majority"] else None
              for r in rows}
    print(json.dumps({"bench": "token_probe", "run": str(run_dir),
                      "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
                      "ratio_vs_majority": ratios}))


if __name__ == "__main__":
    main()
