"""After training: Stage-1 diagnostics, test-split captions and scores, ``summary.md``.

Learning is checked against controls on the same test items (``cora_kit.eval.controls``):
panoramas shuffled across items, an in-distribution blank panorama (the scene without its
objects, or the panorama's mean colour), both fed through the same trained model, and the
text prior (majority training answer per query template, no model). A model that uses the
image beats all three; ``summary.md`` shows them overall and per query kind.

Files: ``predictions.jsonl`` (trained), ``predictions_<control>.jsonl`` (``shuffled``,
``blank``, ``text_prior``), all ``{"id", "prediction"}``; ``references.jsonl``
(``{"id", "references"}`` plus ``"kind"`` when the data names one); ``scores.json`` with one
entry per condition and ``controls`` (what each control was).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cora_kit.train.protocol import CoraModelLike
from cora_kit.train.stages import FeatureProvider, stage1_views

#: the trained model, then the controls, in table order
CONDITIONS = ("panorama", "shuffled", "blank", "text_prior")
CONTROLS = CONDITIONS[1:]
LABELS = {"panorama": "trained", "shuffled": "shuffled panoramas", "blank": "blank panorama", "text_prior": "text prior"}


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def stage1_diagnostics(model: CoraModelLike, items: Sequence[dict[str, Any]], ctx: Any) -> dict[str, Any]:
    """Seed's ``val_*`` diagnostics of the overlap head on the tiles of ``items``."""
    from cora_kit.eval.diagnostics import stage1_diagnostics as diagnose

    tiles = stage1_views(model)
    provider = FeatureProvider(
        model, 1, str(ctx.cache_dir), ctx.device, ctx.config.eval.batch_size, tiles, stats=ctx.cache_stats
    )
    corr = model.correspondences
    heads, lats = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in _batches(items, ctx.config.eval.batch_size):
                latent = model.resample(model.encode_trainable(provider.features(batch), 1))
                lat_tiles = latent[:, tiles] if latent.shape[1] != len(tiles) else latent
                lats.append(lat_tiles.float().cpu())
                heads.append(model.overlap_head(lat_tiles).float().cpu())
    finally:
        model.train(was_training)
    result = diagnose(torch.cat(heads), corr, model.latent_grid, resampler_features=torch.cat(lats))
    return {**result.to_dict(), "num_images": len(items)}


@torch.no_grad()
def predict(
    model: CoraModelLike, items: Sequence[dict[str, Any]], ctx: Any, condition: str = "panorama",
    blank: Callable[[dict[str, Any]], torch.Tensor] | None = None,
) -> dict[str, str]:
    """Captions for ``items`` with the real panorama, another item's (``shuffled``) or a
    blank one (``blank``: ``blank(item) -> [3,H,W]``, see ``cora_kit.eval.controls``)."""
    from cora_kit.eval.controls import derangement

    ev = ctx.config.eval
    provider = FeatureProvider(model, 3, str(ctx.cache_dir), ctx.device, batch_size=ev.batch_size, stats=ctx.cache_stats)
    paths = list(dict.fromkeys(i["image_path"] for i in items))
    if condition == "shuffled":
        if len(paths) < 2:
            raise ValueError("the shuffled-panorama control needs at least 2 distinct images")
        perm = derangement(len(paths), ctx.config.seed)
        by_path = {i["image_path"]: i for i in items}
        swap = {p: by_path[paths[perm[k]]] for k, p in enumerate(paths)}
    elif condition == "blank":
        if blank is None:
            raise ValueError("the blank control needs a blank(item) function")
        blanks = {p: {"id": f"blank:{p}", "erp": blank(i)} for p, i in {i["image_path"]: i for i in items}.items()}
    elif condition != "panorama":
        raise ValueError(f"unknown condition {condition!r}; one of panorama, shuffled, blank")
    out: dict[str, str] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(items, ev.batch_size):
            if condition == "panorama":
                hidden = provider.features(batch)
            elif condition == "shuffled":
                hidden = provider.features([swap[i["image_path"]] for i in batch])
            else:
                hidden = provider.features([blanks[i["image_path"]] for i in batch])
            latent = model.resample(model.encode_trainable(hidden, 3))
            texts = model.generate(latent, [i["query"] for i in batch], max_new_tokens=ev.max_new_tokens, num_beams=ev.num_beams)
            out.update({i["id"]: t for i, t in zip(batch, texts, strict=True)})
    finally:
        model.train(was_training)
    return out


def score(
    predictions: dict[str, str], references: dict[str, list[str]], metrics: Sequence[str],
    kinds: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    from cora_kit.eval.scoring import score as score_fn

    return score_fn(predictions, references, list(metrics), kinds=kinds).to_json()


def evaluate_test(model: CoraModelLike, splits: Any, ctx: Any) -> dict[str, Any] | None:
    """predictions*.jsonl, references.jsonl and scores.json on the test split."""
    from cora_kit.eval.controls import CONTROL_DESCRIPTIONS, blank_maker, text_prior_predictions

    items = list(splits.test)
    rd = ctx.rd
    if not items:
        return None
    refs = {i["id"]: list(i["references"]) for i in items}
    kinds = {i["id"]: i.get("kind") for i in items}
    rd.write_jsonl(rd.references, [
        {"id": k, "references": v, **({"kind": kinds[k]} if kinds[k] else {})} for k, v in refs.items()
    ])
    method, blank = blank_maker(ctx.config.eval.blank, splits.source, items)
    prior_preds, prior_info = text_prior_predictions(splits.train, items)
    scores: dict[str, Any] = {
        "split": "test", "num_items": len(items),
        "kinds": {k: sum(1 for v in kinds.values() if v == k) for k in sorted({v for v in kinds.values() if v})},
        "controls": {
            "shuffled": CONTROL_DESCRIPTIONS["shuffled"],
            "blank": f"{method}: {CONTROL_DESCRIPTIONS[method]}",
            "text_prior": CONTROL_DESCRIPTIONS["text_prior"]
            + f" ({prior_info['templates']} templates; {prior_info['unseen_templates']} test templates unseen"
            " in training get the overall majority answer)",
        },
    }
    for cond in CONDITIONS:
        if cond == "text_prior":
            preds = prior_preds
        else:
            preds = predict(model, items, ctx, cond, blank=blank)
        path = rd.predictions if cond == "panorama" else rd.root / f"predictions_{cond}.jsonl"
        rd.write_jsonl(path, [{"id": k, "prediction": v} for k, v in preds.items()])
        scores[cond] = score(preds, refs, ctx.config.eval.metrics, kinds=kinds)
    rd.write_json(rd.scores, scores)
    return scores


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_summary(rd: Any, config: Any, result: Any, splits: Any, plugins: dict[str, Any]) -> None:
    """``summary.md``: stages, diagnostics before/after, scores vs every control (per kind)."""
    m = config.model
    lines = [
        f"# Run {rd.root.name}", "",
        f"resampler `{m.resampler.name}`, loss `{m.loss.name}`, preset `{config.preset}`, seed {config.seed},"
        f" data `{splits.source}`; total {result.seconds:.0f} s.", "",
        "## Stages", "", "| stage | steps | final loss | trainable params | seconds |", "|---|---:|---:|---:|---:|",
    ]
    for k, s in sorted(result.stages.items()):
        if s.skipped:
            lines.append(f"| {k} | (done earlier) | | | |")
        else:
            lines.append(f"| {k} | {s.steps} | {_fmt(s.metrics.get('loss'))} | {sum(s.trainable.values()):,} | {s.seconds:.0f} |")
    d = result.diagnostics
    if d:
        lines += ["", f"## Stage-1 diagnostics ({d.get('split')})", "", "| metric | before | after |", "|---|---:|---:|"]
        before, after = d.get("before") or {}, d.get("after") or {}
        for key in ("adj_cos", "adj_mse", "overlap_ret_acc", "hungarian_acc", "feat_std", "eff_rank", "r_eff_rank"):
            lines.append(f"| {key} | {_fmt(before.get(key))} | {_fmt(after.get(key))} |")
        if before.get("adj_cos") is not None and after.get("adj_cos") is not None:
            verdict = "up" if after["adj_cos"] > before["adj_cos"] else "NOT up"
            lines.append(f"\nadj_cos {verdict}: {_fmt(before['adj_cos'])} -> {_fmt(after['adj_cos'])}.")
    sc = result.scores
    if sc:
        lines += _score_tables(sc)
    elif splits.notes:
        lines += ["", "## Test split", ""] + [f"- {n}" for n in splits.notes]
    lines += ["", "## Plugins", "", "```", _plugins_text(plugins), "```", ""]
    rd.write_text(rd.summary, "\n".join(lines))


def _score_tables(sc: dict[str, Any]) -> list[str]:
    """The test-split tables: every metric per condition, then exact match per kind."""
    conds = [c for c in CONDITIONS if c in sc]
    head = "| metric | " + " | ".join(LABELS[c] for c in conds) + " |"
    rule = "|---|" + "---:|" * len(conds)
    keys = [k for k in sc["panorama"] if k != "unavailable" and "/" not in k]
    lines = ["", f"## Test split ({sc['num_items']} items)", "", head, rule]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(sc[c].get(key)) for c in conds) + " |")
    for key, why in sc["panorama"].get("unavailable", {}).items():
        lines.append(f"\n{key}: {why}")
    kinds = sc.get("kinds") or {}
    if kinds and any(f"exact-match/{k}" in sc["panorama"] for k in kinds):
        lines += ["", "## Exact match per query kind", "", "| kind | items | " + " | ".join(LABELS[c] for c in conds) + " |",
                  "|---|---:|" + "---:|" * len(conds)]
        for kind, n in kinds.items():
            lines.append(f"| {kind} | {n} | " + " | ".join(_fmt(sc[c].get(f"exact-match/{kind}")) for c in conds) + " |")
        lines.append("| **all** | " + f"{sc['num_items']} | " + " | ".join(_fmt(sc[c].get("exact-match")) for c in conds) + " |")
    lines += ["", "Controls:", ""] + [f"- {LABELS[c]}: {why}" for c, why in (sc.get("controls") or {}).items()]
    headline = "exact-match" if isinstance(sc["panorama"].get("exact-match"), float) else "cider"
    values = {c: sc[c].get(headline) for c in conds}
    if all(isinstance(v, float) for v in values.values()):
        margins = {c: values["panorama"] - values[c] for c in conds[1:]}
        ok = all(m > 0 for m in margins.values())
        parts = ", ".join(f"{LABELS[c]} {values[c]:.4f} ({m:+.4f})" for c, m in margins.items())
        lines.append(f"\n{headline} trained {values['panorama']:.4f} vs {parts}: the model "
                     f"{'beats every control' if ok else 'does NOT beat every control'}.")
    return lines


def _plugins_text(plugins: dict[str, Any]) -> str:
    import json

    return json.dumps(plugins, indent=2, default=str)


__all__ = ["CONDITIONS", "CONTROLS", "evaluate_test", "predict", "stage1_diagnostics", "write_summary"]
