"""Built-in stitchers (registered through the `cora_kit` entry point `stitchers`)."""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_stitchers(register: RegisterCallback) -> None:
    """Register the built-in stitchers."""
    from cora_kit_builtins.stitchers import concat, nearest_view, stride_views

    register(
        "stride-views",
        stride_views.StrideViewsStitcher,
        params=stride_views.StrideViewsParams,
        description="seed: drop each tile's overlap strip (16x72 + 256 global = 1,408 tokens)",
    )
    register(
        "nearest-view",
        nearest_view.NearestViewStitcher,
        params=nearest_view.NearestViewParams,
        description="each direction once: token kept by the tile whose axis is closest to its ray",
    )
    register(
        "concat",
        concat.ConcatStitcher,
        params=concat.ConcatParams,
        description="all V x P tokens (2,304 for the seed layout)",
    )
