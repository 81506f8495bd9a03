"""Built-in tilers (registered through the `cora_kit` entry point `tilers`).

Modules are imported inside the hook so that listing plugins stays cheap.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_tilers(register: RegisterCallback) -> None:
    """Register the built-in tilers."""
    from cora_kit_builtins.tilers import e2p

    register(
        "e2p",
        e2p.E2PTiler,
        params=e2p.E2PParams,
        backend="torch grid_sample",
        description="seed: global view + 8 perspective tiles (FOV 90, stride 45, 256 px)",
    )
    register(
        "cubemap",
        e2p.CubemapTiler,
        params=e2p.CubemapParams,
        backend="torch grid_sample",
        description="global view + 6 cube faces (FOV 90)",
    )
