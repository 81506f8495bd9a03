"""Built-in resamplers (registered through the `cora_kit` entry point `resamplers`).

Modules are imported inside the hook so that listing plugins stays cheap and one
resampler's optional dependency cannot break the others.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_resamplers(register: RegisterCallback) -> None:
    """Register the built-in resamplers."""
    from cora_kit_builtins.resamplers import identity, mlp

    register(
        "identity",
        identity.IdentityResampler,
        params=identity.IdentityParams,
        backend="torch",
        description="keeps tokens unchanged (in_dim == out_dim)",
    )
    register(
        "mlp",
        mlp.MLPResampler,
        params=mlp.MLPParams,
        backend="torch",
        description="LLaVA-style 3-layer MLP with LayerNorm (seed comparison)",
    )
