"""Controls a trained model is measured against, on the same test items (DESIGN.md section 11).

- ``shuffled``: each item gets another item's panorama (a seeded derangement of the
  distinct images); the model sees a real, in-distribution panorama that is wrong.
- ``blank``: each item gets an in-distribution *empty* panorama, so the answers are what the
  model says when nothing is there, not degenerate text on an out-of-distribution input.
  Methods (``eval.blank``): ``objects-removed`` re-renders the item's scene without its
  objects (sky and ground of that scene; needs the synthetic set's ``scenes.jsonl``);
  ``mean-colour`` fills the panorama with its own mean colour (any data); ``auto`` takes
  ``objects-removed`` where every test image has a scene, else ``mean-colour``. The method
  used is written into ``scores.json`` (``controls``) and ``summary.md``.
- ``text_prior``: no model and no image: the majority training answer per query template
  (``cora_kit.data.prior``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cora_kit.errors import CoraKitError

BLANK_METHODS = ("auto", "objects-removed", "mean-colour")
CONTROL_DESCRIPTIONS = {
    "shuffled": "each item's panorama replaced by another test item's (seeded derangement of the images)",
    "objects-removed": "each panorama re-rendered from its scene without the objects (same sky and ground)",
    "mean-colour": "each panorama replaced by its own mean colour",
    "text_prior": "no model: the majority training answer per query template",
}


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (n >= 2)."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 elements")
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g).tolist()
        if all(i != p for i, p in enumerate(perm)):
            return perm


def _scenes(source: str) -> dict[str, Any] | None:
    """Image id -> Scene when ``source`` is a synthetic set folder (None otherwise)."""
    root = Path(source) if source else None
    if root is None or not (root / "scenes.jsonl").is_file():
        return None
    from cora_kit.data.synth import load_scenes

    return load_scenes(root)


def mean_colour(erp: torch.Tensor) -> torch.Tensor:
    """``[3,H,W]`` -> the same shape filled with its per-channel mean."""
    return erp.mean(dim=(1, 2), keepdim=True).expand_as(erp).contiguous()


def blank_maker(
    method: str, source: str, items: Sequence[dict[str, Any]]
) -> tuple[str, Callable[[dict[str, Any]], torch.Tensor]]:
    """The blank method actually used for ``items`` and a function item -> blank ERP
    ``[3,H,W]`` (same size as the item's panorama).

    ``objects-removed`` where a test image has no scene is a CoraKitError (no silent
    substitution); ``auto`` chooses before the first item and says which.
    """
    if method not in BLANK_METHODS:
        raise CoraKitError(f"eval.blank must be one of {', '.join(BLANK_METHODS)}; got {method!r}")
    scenes = _scenes(source) if method in ("auto", "objects-removed") else None
    ids = [Path(i["image_path"]).stem for i in items]
    covered = scenes is not None and all(i in scenes for i in ids)
    if method == "objects-removed" and not covered:
        why = "no scenes.jsonl" if scenes is None else "some test images have no scene"
        raise CoraKitError(
            f"eval.blank=objects-removed needs the synthetic set's scenes ({source}: {why}); "
            "use eval.blank=mean-colour or auto"
        )
    if method == "mean-colour" or not covered:
        return "mean-colour", lambda item: mean_colour(item["erp"])

    from cora_kit.data.images import erp_tensor
    from cora_kit.data.render import render_erp
    from cora_kit.data.scene import Scene

    def empty(item: dict[str, Any]) -> torch.Tensor:
        scene = scenes[Path(item["image_path"]).stem]  # type: ignore[index]
        h, w = item["erp"].shape[-2:]
        # what reading a PNG of the empty scene would give, bit for bit
        return erp_tensor(render_erp(Scene(scene.sky, scene.ground, ()), int(h), int(w)))

    return "objects-removed", empty


def text_prior_predictions(
    train: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]
) -> tuple[dict[str, str], dict[str, Any]]:
    """``{id: majority training answer of its query template}`` and facts about the prior
    (templates learnt, test templates never seen in training)."""
    from cora_kit.data.prior import TextPrior

    if not train:
        raise CoraKitError("the text-prior control needs a training split with answers")
    prior = TextPrior.fit((i["query"], i["answer"]) for i in train)
    preds = {i["id"]: prior.predict(i["query"]) for i in items}
    return preds, {"templates": len(prior.by_template), "unseen_templates": len(prior.unseen)}


__all__ = [
    "BLANK_METHODS",
    "CONTROL_DESCRIPTIONS",
    "blank_maker",
    "derangement",
    "mean_colour",
    "text_prior_predictions",
]
