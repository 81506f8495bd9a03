"""Built-in tilers (registered through the `cora_kit` entry point `tilers`).

Modules are imported inside the hook so that listing plugins stays cheap.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


def _sampling_backend() -> str:
    """What ``backend="auto"`` runs here (OpenCV is imported only to check)."""
    from cora_kit_builtins.tilers.base import backend_label

    return backend_label("auto", samples=True)


def _resize_backend() -> str:
    from cora_kit_builtins.tilers.base import backend_label

    return backend_label("auto", samples=False)


@hookimpl
def register_tilers(register: RegisterCallback) -> None:
    """Register the built-in tilers."""
    from cora_kit_builtins.tilers import e2p, erp_baselines

    register(
        "e2p",
        e2p.E2PTiler,
        params=e2p.E2PParams,
        backend=_sampling_backend,
        description="seed: global view + 8 perspective tiles (FOV 90, stride 45, 256 px)",
    )
    register(
        "cubemap",
        e2p.CubemapTiler,
        params=e2p.CubemapParams,
        backend=_sampling_backend,
        description="global view + 6 cube faces (FOV 90)",
    )
    register(
        "erp-grid",
        erp_baselines.ERPGridTiler,
        params=erp_baselines.ERPGridParams,
        backend=_sampling_backend,
        description="baseline: global view + 8 unprojected ERP crops (90 x 180 deg, stride 45, 256 px)",
    )
    register(
        "erp-global",
        erp_baselines.ERPGlobalTiler,
        params=erp_baselines.ERPGlobalParams,
        backend=_resize_backend,
        description="baseline: the whole ERP resized to one 256 px view (what a plain VLM sees)",
    )
