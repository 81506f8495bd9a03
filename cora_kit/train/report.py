"""Validation and evaluation: Stage-1 diagnostics, the val LM loss, test-split captions and
scores, ``summary.md``.

Learning is checked against the controls of ``eval.controls`` on the same test items
(``cora_kit.eval.controls``): panoramas shuffled across items (a seeded derangement of the
distinct images) and an in-distribution blank panorama (the scene without its objects, or
the panorama's mean colour), both fed through the same trained model, and the text prior
(majority training answer per query template, no model). A model that uses the image
beats all three; ``summary.md`` shows them overall and, for exact match, per query kind.

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

from cora_kit.device import autocast
from cora_kit.train import distributed as dist_utils
from cora_kit.train.context import RunContext
from cora_kit.train.protocol import CoraModelLike
from cora_kit.train.stages import FeatureProvider, stage1_views

#: the trained model, then the controls (``eval.controls``), in table order
CONDITIONS = ("panorama", "shuffled", "blank", "text_prior")
CONTROLS = CONDITIONS[1:]
CONDITION_LABELS = {
    "panorama": "trained", "shuffled": "shuffled panoramas", "blank": "blank panorama", "text_prior": "text prior",
}


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def stage1_diagnostics(model: CoraModelLike, items: Sequence[dict[str, Any]], ctx: RunContext) -> dict[str, Any]:
    """Seed's ``val_*`` diagnostics of the overlap head on the tiles of ``items``."""
    from cora_kit.eval.diagnostics import stage1_diagnostics as diagnose

    tiles = stage1_views(model)
    provider = FeatureProvider(
        model, 1, str(ctx.cache_dir), ctx.device, ctx.config.eval.batch_size, tiles, stats=ctx.cache_stats,
        dtype=ctx.config.feature_cache.dtype, num_workers=ctx.config.data.num_workers,
    )
    provider.fill(items)  # decode + tile in DataLoader workers, encode in batches
    corr = model.correspondences
    heads, lats = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in _batches(items, ctx.config.eval.batch_size):
                with autocast(ctx.device, ctx.config.precision):
                    latent = model.resample(model.encode_trainable(provider.features(batch), 1))
                    lat_tiles = latent[:, tiles] if latent.shape[1] != len(tiles) else latent
                    head = model.overlap_head(lat_tiles)
                lats.append(lat_tiles.float().cpu())
                heads.append(head.float().cpu())
    finally:
        model.train(was_training)
    result = diagnose(torch.cat(heads), corr, model.latent_grid, resampler_features=torch.cat(lats))
    return {**result.to_dict(), "num_images": len(items)}


@torch.no_grad()
def validation_loss(model: CoraModelLike, items: Sequence[dict[str, Any]], ctx: RunContext, stage: int) -> dict[str, float]:
    """The seed's ``val_loss``: LM cross-entropy of ``items`` (val rows, each with its
    ``answer``) under the current weights, averaged over answer tokens, in eval mode.
    Returns ``{"val_loss", "val_items"}``; the training RNG is left untouched."""
    provider = FeatureProvider(model, stage, str(ctx.cache_dir), ctx.device, ctx.config.eval.batch_size,
                               stats=ctx.cache_stats, dtype=ctx.config.feature_cache.dtype)
    total, tokens = 0.0, 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[ctx.device.index or 0] if ctx.device.type == "cuda" else []):
            for batch in _batches(items, ctx.config.eval.batch_size):
                latent = model.resample(model.encode_trainable(provider.features(batch), stage))
                loss, logs = model.lm_loss(latent, [i["query"] for i in batch], [i["answer"] for i in batch])
                n = float(logs.get("answer_tokens", len(batch)))
                total += float(loss) * n
                tokens += n
    finally:
        model.train(was_training)
    return {"val_loss": total / max(tokens, 1.0), "val_items": float(len(items))}


#: the conditions ``predict`` captions through the model
MODEL_CONDITIONS = ("panorama", "shuffled", "blank")


@torch.no_grad()
def predict(
    model: CoraModelLike, items: Sequence[dict[str, Any]], ctx: RunContext, condition: str = "panorama",
    blank: Callable[[dict[str, Any]], torch.Tensor] | None = None,
) -> dict[str, str] | None:
    """Captions for ``items`` with the real panorama, another item's (``shuffled``) or a
    blank one (``blank``: ``blank(item) -> [3,H,W]``, see ``cora_kit.eval.controls``).

    Under DDP (``ctx.dist``) each rank captions its shard (``items[rank::world]``) and rank 0
    gathers every caption, in ``items`` order; the other ranks get None. The shuffled
    control's pairing is drawn over all items first, so it does not depend on the sharding."""
    from cora_kit.eval.controls import derangement

    if condition not in MODEL_CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; one of {', '.join(MODEL_CONDITIONS)}")
    if condition == "blank" and blank is None:
        raise ValueError("the blank control needs a blank(item) function")
    info = ctx.dist
    ev = ctx.config.eval
    provider = FeatureProvider(
        model, 3, str(ctx.cache_dir), ctx.device, batch_size=ev.batch_size, stats=ctx.cache_stats,
        dtype=ctx.config.feature_cache.dtype, num_workers=ctx.config.data.num_workers,
    )
    paths = list(dict.fromkeys(i["image_path"] for i in items))
    if condition == "shuffled":
        if len(paths) < 2:
            raise ValueError("the shuffled-panorama control needs at least 2 distinct images")
        perm = derangement(len(paths), ctx.config.seed)
        by_path = {i["image_path"]: i for i in items}
        swap = {p: by_path[paths[perm[k]]] for k, p in enumerate(paths)}
    mine = dist_utils.shard(list(items), info)
    if condition == "blank":  # one blank per distinct image, in memory
        blanks = {p: {"id": f"blank:{p}", "erp": blank(i)} for p, i in {i["image_path"]: i for i in mine}.items()}
        provider.fill(list(blanks.values()))
    else:  # decode + tile in DataLoader workers, encode in batches
        provider.fill(mine if condition == "panorama" else [swap[i["image_path"]] for i in mine])
    out: dict[str, str] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(mine, ev.batch_size):
            if condition == "panorama":
                hidden = provider.features(batch)
            elif condition == "shuffled":
                hidden = provider.features([swap[i["image_path"]] for i in batch])
            else:
                hidden = provider.features([blanks[i["image_path"]] for i in batch])
            with autocast(ctx.device, ctx.config.precision):  # bf16 on CUDA (precision auto)
                latent = model.resample(model.encode_trainable(hidden, 3))
                texts = model.generate(
                    latent, [i["query"] for i in batch], max_new_tokens=ev.max_new_tokens, num_beams=ev.num_beams
                )
            out.update({i["id"]: t for i, t in zip(batch, texts, strict=True)})
    finally:
        model.train(was_training)
    shards = dist_utils.gather_to_main(out, info)
    if shards is None:
        return None
    merged = {k: v for part in shards for k, v in part.items()}
    return {i["id"]: merged[i["id"]] for i in items}


def score(
    predictions: dict[str, str], references: dict[str, list[str]], metrics: Sequence[str], protocol: str = "grouped",
    kinds: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """``score_protocol`` output (see ``cora_kit.eval.protocols``); ``kinds`` (id -> query
    kind) adds the per-kind values (``exact-match/<kind>``)."""
    from cora_kit.eval.protocols import score_protocol

    return score_protocol(predictions, references, protocol, list(metrics), kinds=kinds)


#: keys of a ``score_protocol`` result that describe the scoring, not a metric
_SCORING_KEYS = ("protocol", "num_items", "num_rows", "implementations")


def evaluate_test(model: CoraModelLike, splits: Any, ctx: RunContext) -> dict[str, Any] | None:
    """predictions*.jsonl, references.jsonl and scores.json on the test split: the trained
    model and the controls of ``eval.controls``. Every rank captions its shard (``predict``);
    rank 0 scores and writes, and returns the scores (None elsewhere).

    scores.json: ``{"split", "num_items", "protocol" (grouped | paper), ["num_rows",
    "implementations"], "kinds": {kind: items}, "controls": {control: what it was},
    <condition>: {metric: value, "unavailable": {...}}}``.
    """
    from cora_kit.eval.controls import CONTROL_DESCRIPTIONS, blank_maker, text_prior_predictions

    items = list(splits.test)
    rd = ctx.rd
    if not items:
        return None
    ev = ctx.config.eval
    refs = {i["id"]: list(i["references"]) for i in items}
    kinds = {i["id"]: i.get("kind") for i in items}
    rd.write_jsonl(rd.references, [  # a no-op off rank 0 (RunDir writer)
        {"id": k, "references": v, **({"kind": kinds[k]} if kinds[k] else {})} for k, v in refs.items()
    ])
    protocol = ev.protocol
    scores: dict[str, Any] = {
        "split": "test", "num_items": len(items), "protocol": protocol,
        "kinds": {k: sum(1 for v in kinds.values() if v == k) for k in sorted({v for v in kinds.values() if v})},
        "controls": {},
    }
    blank = None
    if "blank" in ev.controls:
        method, blank = blank_maker(ev.blank, splits.source, items)
        scores["controls"]["blank"] = f"{method}: {CONTROL_DESCRIPTIONS[method]}"
    if "shuffled" in ev.controls:
        scores["controls"]["shuffled"] = CONTROL_DESCRIPTIONS["shuffled"]
    for cond in [c for c in CONDITIONS if c == "panorama" or c in ev.controls]:
        if cond == "text_prior":
            preds, info = text_prior_predictions(splits.train, items) if ctx.dist.is_main else (None, {})
            scores["controls"][cond] = (
                CONTROL_DESCRIPTIONS[cond] + f" ({info.get('templates')} templates; {info.get('unseen_templates')}"
                " test templates unseen in training get the overall majority answer)"
            )
        else:
            preds = predict(model, items, ctx, cond, blank=blank)
        if preds is None:  # not rank 0: its shard went to rank 0
            continue
        path = rd.predictions if cond == "panorama" else rd.root / f"predictions_{cond}.jsonl"
        rd.write_jsonl(path, [{"id": k, "prediction": v} for k, v in preds.items()])
        result = score(preds, refs, ev.metrics, protocol, kinds=kinds)
        for key in ("num_rows", "implementations"):
            if key in result:
                scores[key] = result[key]
        scores[cond] = {k: v for k, v in result.items() if k not in _SCORING_KEYS}
    if not ctx.dist.is_main:
        return None
    rd.write_json(rd.scores, scores)
    return scores


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_summary(rd: Any, config: Any, result: Any, splits: Any, plugins: dict[str, Any]) -> None:
    """``summary.md``: stages, diagnostics before/after, scores vs the controls."""
    m = config.model
    lines = [
        f"# Run {rd.root.name}", "",
        f"resampler `{m.resampler.name}`, loss `{m.loss.name}`, preset `{config.preset}`, seed {config.seed},"
        f" data `{splits.source}`; total {result.seconds:.0f} s.", "",
        *_data_lines(getattr(result, "data", None)),
        "## Stages", "", "| stage | steps | final loss | validation (last epoch) | trainable params | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, s in sorted(result.stages.items()):
        if s.skipped:
            lines.append(f"| {k} | (done earlier) | | | | |")
        else:
            val = _validation_cell(getattr(s, "validation", {}) or {})
            lines.append(f"| {k} | {s.steps} | {_fmt(s.metrics.get('loss'))} | {val} | {sum(s.trainable.values()):,} | {s.seconds:.0f} |")
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
    """The test-split tables: every metric per condition, exact match per query kind, what
    each control was, and whether the model beats them (on exact match, else CIDEr)."""
    conds = [c for c in CONDITIONS if c in sc]
    labels = " | ".join(CONDITION_LABELS[c] for c in conds)
    rows = f", {sc['num_rows']} reference rows" if "num_rows" in sc else ""
    lines = ["", f"## Test split ({sc['num_items']} items{rows})", "", _protocol_line(sc), "",
             f"| metric | {labels} |", "|---|" + "---:|" * len(conds)]
    for key in [k for k in sc["panorama"] if k != "unavailable" and "/" not in k]:
        lines.append(f"| {key} | " + " | ".join(_fmt(sc[c].get(key)) for c in conds) + " |")
    for key, why in sc["panorama"].get("unavailable", {}).items():
        lines.append(f"\n{key}: {why}")
    kinds = sc.get("kinds") or {}
    if any(f"exact-match/{k}" in sc["panorama"] for k in kinds):
        lines += ["", "## Exact match per query kind", "", f"| kind | items | {labels} |",
                  "|---|---:|" + "---:|" * len(conds)]
        for kind, n in kinds.items():
            lines.append(f"| {kind} | {n} | " + " | ".join(_fmt(sc[c].get(f"exact-match/{kind}")) for c in conds) + " |")
        lines.append(f"| **all** | {sc['num_items']} | " + " | ".join(_fmt(sc[c].get("exact-match")) for c in conds) + " |")
    if sc.get("controls"):
        lines += ["", "Controls:", ""] + [f"- {CONDITION_LABELS[c]}: {why}" for c, why in sc["controls"].items()]
    if len(conds) == 1:
        lines.append("\nNo controls were evaluated (eval.controls is empty): nothing shows the model uses the panorama.")
        return lines
    headline = "exact-match" if isinstance(sc["panorama"].get("exact-match"), float) else "cider"
    values = {c: sc[c].get(headline) for c in conds}
    if all(isinstance(v, float) for v in values.values()):
        margins = {c: values["panorama"] - values[c] for c in conds[1:]}
        ok = all(m > 0 for m in margins.values())
        versus = ", ".join(f"{CONDITION_LABELS[c]} {values[c]:.4f} ({m:+.4f})" for c, m in margins.items())
        lines.append(f"\n{headline} trained {values['panorama']:.4f} vs {versus}: the model"
                     f" {'beats every control' if ok else 'does NOT beat every control'}.")
    return lines


def _validation_cell(values: dict[str, float]) -> str:
    if "val_loss" in values:
        return f"val_loss {values['val_loss']:.4f}"
    if "val_adj_cos" in values:
        return f"val_adj_cos {values['val_adj_cos']:.4f}"
    return "n/a"


def _data_lines(data: dict[str, Any] | None) -> list[str]:
    """``## Data``: rows read, items and skipped rows per split (from data-report.json)."""
    if not data:
        return []
    lines = ["## Data", ""]
    if data["splits"]:
        lines += ["| split | file | rows read | items | skipped rows |", "|---|---|---:|---:|---:|"]
    for name, v in data["splits"].items():
        why = ", ".join(f"{n} {r}" for r, n in v["skipped_by_reason"].items())
        lines.append(f"| {name} | `{v['file']}` | {v['rows_read']} | {v['items']} | {v['skipped']}"
                     + (f" ({why})" if why else "") + " |")
    targets = {"all": "every (image, query, annotation) row", "first": "the first annotation of each (image, query)",
               "sample": "one annotation per (image, query), drawn each epoch"}[data["train_targets"]]
    if data["splits"]:
        lines.append("")
    lines.append(f"Stages 2-3 train on {data['training_items_stage2_3']} items: {targets}"
                 f" (`data.train_targets: {data['train_targets']}`).")
    if data["skipped_total"]:
        lines.append(f"**{data['skipped_total']} rows were skipped** (`data.on_bad_row: skip`); each is listed"
                     " with its file, row and reason in `data-report.json`.")
    else:
        lines.append(f"No row was skipped (`data.on_bad_row: {data['on_bad_row']}`).")
    return lines + [""]


def _protocol_line(scores: dict[str, Any]) -> str:
    protocol = scores.get("protocol", "grouped")
    if protocol == "grouped":
        return "Scoring protocol `grouped`: each prediction against all references of its (image, query)."
    impl = "; ".join(f"{k}: {v}" for k, v in scores.get("implementations", {}).items())
    return f"Scoring protocol `{protocol}`: each reference row alone, with the paper's implementations ({impl})."


def _plugins_text(plugins: dict[str, Any]) -> str:
    import json

    return json.dumps(plugins, indent=2, default=str)


__all__ = ["CONDITIONS", "CONTROLS", "evaluate_test", "predict", "stage1_diagnostics", "write_summary"]
