"""Built-in encoders (registered through the `cora_kit` entry point `encoders`).

Modules are imported inside the hook so that listing plugins stays cheap.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


@hookimpl
def register_encoders(register: RegisterCallback) -> None:
    """Register the built-in encoders."""
    from cora_kit_builtins.encoders import siglip2

    register(
        "siglip2",
        siglip2.Siglip2Encoder,
        aliases=("siglip",),
        params=siglip2.Siglip2Params,
        backend="transformers SiglipVisionModel",
        description="SigLIP2 so400m-patch16-256 vision tower (transformers); paper: [N,256,1152], grid 16x16",
    )
