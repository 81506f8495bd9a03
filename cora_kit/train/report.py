"""Validation and evaluation: Stage-1 diagnostics, the val LM loss, test-split captions and
scores, ``summary.md``.

Learning is checked against two controls fed through the same trained model: every
panorama replaced by a blank (black) ERP, and panoramas shuffled across items (a
derangement of the distinct images, seeded). A model that uses the image beats both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from cora_kit.device import autocast
from cora_kit.train import distributed as dist_utils
from cora_kit.train.context import RunContext
from cora_kit.train.protocol import CoraModelLike
from cora_kit.train.stages import FeatureProvider, stage1_views

CONDITIONS = ("panorama", "blank", "shuffled")
CONDITION_LABELS = {"panorama": "trained", "blank": "blank panorama", "shuffled": "shuffled panoramas"}


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


def _derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (n >= 2)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g).tolist()
        if all(i != p for i, p in enumerate(perm)):
            return perm


@torch.no_grad()
def predict(
    model: CoraModelLike, items: Sequence[dict[str, Any]], ctx: RunContext, condition: str = "panorama"
) -> dict[str, str] | None:
    """Captions for ``items`` with the real panorama, a blank one, or another item's.

    Under DDP (``ctx.dist``) each rank captions its shard (``items[rank::world]``) and rank 0
    gathers every caption, in ``items`` order; the other ranks get None. The shuffled
    control's pairing is drawn over all items first, so it does not depend on the sharding."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; one of {CONDITIONS}")
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
        perm = _derangement(len(paths), ctx.config.seed)
        by_path = {i["image_path"]: i for i in items}
        swap = {p: by_path[paths[perm[k]]] for k, p in enumerate(paths)}
    mine = dist_utils.shard(list(items), info)
    if condition != "blank":  # decode + tile in DataLoader workers, encode in batches
        provider.fill(mine if condition == "panorama" else [swap[i["image_path"]] for i in mine])
    blank = None
    out: dict[str, str] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(mine, ev.batch_size):
            if condition == "panorama":
                hidden = provider.features(batch)
            elif condition == "shuffled":
                hidden = provider.features([swap[i["image_path"]] for i in batch])
            else:  # blank
                if blank is None:
                    erp = torch.zeros_like(batch[0]["erp"])
                    blank = provider.features([{"id": "blank", "erp": erp}])
                hidden = blank.expand(len(batch), *blank.shape[1:])
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
    predictions: dict[str, str], references: dict[str, list[str]], metrics: Sequence[str], protocol: str = "grouped"
) -> dict[str, Any]:
    """``score_protocol`` output (see ``cora_kit.eval.protocols``)."""
    from cora_kit.eval.protocols import score_protocol

    return score_protocol(predictions, references, protocol, list(metrics))


#: keys of a ``score_protocol`` result that describe the scoring, not a metric
_SCORING_KEYS = ("protocol", "num_items", "num_rows", "implementations")


def evaluate_test(model: CoraModelLike, splits: Any, ctx: RunContext) -> dict[str, Any] | None:
    """predictions.jsonl, references.jsonl and scores.json on the test split: the trained
    model and the controls of ``eval.controls``. Every rank captions its shard (``predict``);
    rank 0 scores and writes, and returns the scores (None elsewhere).

    scores.json: ``{"split", "num_items", "protocol" (grouped | paper), ["num_rows",
    "implementations"], <condition>: {metric: value, "unavailable": {...}}}``.
    """
    items = list(splits.test)
    rd = ctx.rd
    if not items:
        return None
    refs = {i["id"]: list(i["references"]) for i in items}
    rd.write_jsonl(rd.references, [{"id": k, "references": v} for k, v in refs.items()])
    protocol = ctx.config.eval.protocol
    scores: dict[str, Any] = {"split": "test", "num_items": len(items), "protocol": protocol}
    for cond in ("panorama", *ctx.config.eval.controls):
        preds = predict(model, items, ctx, cond)
        if preds is None:  # not rank 0: its shard went to rank 0
            continue
        if cond == "panorama":
            rd.write_jsonl(rd.predictions, [{"id": k, "prediction": v} for k, v in preds.items()])
        else:
            rd.write_jsonl(rd.root / f"predictions_{cond}.jsonl", [{"id": k, "prediction": v} for k, v in preds.items()])
        result = score(preds, refs, ctx.config.eval.metrics, protocol)
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
        conds = [c for c in CONDITIONS if c in sc]
        metric_keys = [k for k in sc["panorama"] if k != "unavailable"]
        rows = f", {sc['num_rows']} reference rows" if "num_rows" in sc else ""
        lines += ["", f"## Test split ({sc['num_items']} items{rows})", "", _protocol_line(sc), "",
                  "| metric | " + " | ".join(CONDITION_LABELS[c] for c in conds) + " |",
                  "|---|" + "---:|" * len(conds)]
        for key in metric_keys:
            lines.append(f"| {key} | " + " | ".join(_fmt(sc[c].get(key)) for c in conds) + " |")
        for key, why in sc["panorama"].get("unavailable", {}).items():
            lines.append(f"\n{key}: {why}")
        cider = {c: sc[c].get("cider") for c in conds}
        if len(conds) == 1:
            lines.append("\nNo controls were evaluated (eval.controls is empty): nothing shows the model uses the panorama.")
        elif all(isinstance(v, float) for v in cider.values()):
            ok = all(cider["panorama"] > v for c, v in cider.items() if c != "panorama")
            versus = " vs ".join(f"{c} {v:.4f}" for c, v in cider.items() if c != "panorama")
            lines.append(f"\nCIDEr trained {cider['panorama']:.4f} vs {versus}:"
                         f" the model {'uses' if ok else 'does NOT clearly use'} the panorama.")
    elif splits.notes:
        lines += ["", "## Test split", ""] + [f"- {n}" for n in splits.notes]
    lines += ["", "## Plugins", "", "```", _plugins_text(plugins), "```", ""]
    rd.write_text(rd.summary, "\n".join(lines))


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


__all__ = ["CONDITIONS", "evaluate_test", "predict", "stage1_diagnostics", "write_summary"]
