"""``--baseline``: which row of the grid the paired deltas are taken against.

The text names a row as ``resampler:loss`` or ``tiler:resampler:loss``, where each part is
a plugin choice as the grid writes it (``cora-kit:mlp:none``, ``bimamba:vicreg:variant=pairwise``).
Since choices contain ``:`` themselves, every way of cutting the text is tried against the
grid's rows; a part matches a row's choice when both select the same plugin (``mlp`` and
``cora-kit:mlp``) with the same options. Exactly one row (or, without a tiler, one
resampler x loss pair) must match: none or several is a ``ConfigError`` naming the text
and the rows, raised before the first cell runs.

Without a tiler, each row is compared with the baseline at its own tiler; when the
baseline pair exists at one tiler only (or the grid has no tiler axis), every row is
compared with that row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cora_kit.errors import ConfigError, CoraKitError
from cora_kit.plugin_options import parse_choice, same_plugin

Row = tuple[str | None, str, str]  # (tiler or None, resampler label, loss label)


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline: the grid's own labels; ``tiler`` None means "per tiler"."""

    text: str
    resampler: str
    loss: str
    tiler: str | None = None
    tiler_given: bool = False

    def row_for(self, row: Row, rows: Iterable[Row]) -> Row | None:
        """The baseline row that ``row`` is compared with (None: there is none)."""
        if self.tiler_given:
            return (self.tiler, self.resampler, self.loss)
        at = sorted({r[0] or "" for r in rows if r[1:] == (self.resampler, self.loss)})
        tiler = row[0] or ""
        if tiler in at:
            return (row[0], self.resampler, self.loss)
        if len(at) == 1:
            return (at[0] or None, self.resampler, self.loss)
        return None

    @property
    def label(self) -> str:
        pair = f"{self.resampler}:{self.loss}"
        return f"{self.tiler}:{pair}" if self.tiler_given else pair


def _same(kind: str, text: str, label: str) -> bool:
    """Whether choice ``text`` selects the same plugin and options as the grid's ``label``."""
    try:
        a, b = parse_choice(text, "--baseline"), parse_choice(label, kind)
    except ConfigError:
        return False
    return a.options == b.options and same_plugin(kind, a.name, b.name)


def _cuts(parts: list[str], pieces: int) -> Iterable[list[str]]:
    """Every way to cut ``parts`` into ``pieces`` non-empty runs, joined with ':'."""
    if pieces == 1:
        yield [":".join(parts)]
        return
    for i in range(1, len(parts) - pieces + 2):
        for rest in _cuts(parts[i:], pieces - 1):
            yield [":".join(parts[:i]), *rest]


def resolve_baseline(text: str, rows: Iterable[Row]) -> Baseline:
    """The grid row(s) ``text`` names; a ConfigError when it names none or several."""
    rows = sorted(set(rows), key=lambda r: (r[0] or "", r[1], r[2]))
    parts = text.split(":")
    found: set[tuple[str | None, str, str, bool]] = set()
    try:
        for pieces, with_tiler in ((2, False), (3, True)):
            if len(parts) < pieces:
                continue
            for cut in _cuts(parts, pieces):
                tiler, res, loss = cut if with_tiler else (None, *cut)
                for row in rows:
                    if with_tiler and (row[0] is None or not _same("tiler", tiler or "", row[0])):
                        continue
                    if _same("resampler", res, row[1]) and _same("loss", loss, row[2]):
                        found.add((row[0] if with_tiler else None, row[1], row[2], with_tiler))
    except CoraKitError as exc:  # e.g. a name two distributions register
        raise ConfigError(f"--baseline {text!r}: {exc}") from None
    shown = ", ".join(":".join(p for p in r if p is not None) for r in rows)
    if not found:
        raise ConfigError(
            f"--baseline {text!r} names no row of the grid (resampler:loss or tiler:resampler:loss);"
            f" rows: {shown}"
        )
    if len(found) > 1:
        matches = " and ".join(sorted(":".join(p for p in m[:3] if p is not None) for m in found))
        raise ConfigError(f"--baseline {text!r} is ambiguous: it matches {matches}")
    tiler, res, loss, given = found.pop()
    return Baseline(text=text, resampler=res, loss=loss, tiler=tiler, tiler_given=given)
