"""Built-in losses (registered through the `cora_kit` entry point `losses`).

Modules are imported inside the hook so that listing plugins stays cheap.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_losses(register: RegisterCallback) -> None:
    """Register the built-in losses."""
    from cora_kit_builtins.losses import densecl, infonce, none, vicreg

    register(
        "vicreg",
        vicreg.VICRegLoss,
        params=vicreg.VICRegParams,
        backend="torch",
        description="VICReg 25*inv + 25*var + 1*cov on overlap matches (batchwise | pairwise)",
    )
    register(
        "infonce",
        infonce.InfoNCELoss,
        aliases=("contrastive",),
        params=infonce.InfoNCEParams,
        backend="torch",
        description="symmetric overlap InfoNCE + within-tile term over two dropout views",
    )
    register(
        "densecl",
        densecl.DenseCLLoss,
        params=densecl.DenseCLParams,
        backend="torch",
        description="overlap-only InfoNCE (no tile term)",
    )
    register(
        "none",
        none.NoOverlapLoss,
        aliases=("native",),
        params=none.NoneParams,
        backend="torch",
        description="native baseline: no overlap alignment (zero loss)",
    )
