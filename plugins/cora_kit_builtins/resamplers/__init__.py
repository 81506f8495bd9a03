"""Built-in resamplers (registered through the `cora_kit` entry point `resamplers`).

Modules are imported inside the hook so that listing plugins stays cheap and one
resampler's optional dependency cannot break the others.
"""

from __future__ import annotations

from cora_kit.hookspecs import RegisterCallback, hookimpl


def _bimamba_backend() -> str:
    """What ``backend="auto"`` picks here (mamba-ssm is imported lazily, only to check)."""
    from cora_kit_builtins.resamplers.mamba_block import auto_backend_label

    return auto_backend_label()


@hookimpl
def register_resamplers(register: RegisterCallback) -> None:
    """Register the built-in resamplers."""
    from cora_kit_builtins.resamplers import (
        bimamba,
        c_abstractor,
        identity,
        masked_drop,
        mlp,
        perceiver,
        pooling,
        qformer,
    )

    register(
        "identity",
        identity.IdentityResampler,
        params=identity.IdentityParams,
        backend="torch",
        description="keeps tokens unchanged; the latent width is the encoder's",
    )
    register(
        "mlp",
        mlp.MLPResampler,
        params=mlp.MLPParams,
        backend="torch",
        description="LLaVA-style 3-layer MLP with LayerNorm (seed comparison)",
    )
    register(
        "bimamba",
        bimamba.BiMambaResampler,
        params=bimamba.BiMambaParams,
        backend=_bimamba_backend,
        description="bidirectional Mamba SSM over each view's tokens (seed default)",
    )
    register(
        "c-abstractor",
        c_abstractor.CAbstractorResampler,
        aliases=("cabstractor",),
        params=c_abstractor.CAbstractorParams,
        backend="torch",
        description="Honeybee convolutional abstractor (dwconv + SE blocks, optional pooling)",
    )
    register(
        "perceiver",
        perceiver.PerceiverResampler,
        params=perceiver.PerceiverParams,
        backend="torch",
        description="Flamingo perceiver: learned latents cross-attend to the tokens",
    )
    register(
        "qformer",
        qformer.QFormerResampler,
        aliases=("q-former",),
        params=qformer.QFormerParams,
        backend="torch",
        description="BLIP-2-style learned queries with self- and cross-attention",
    )
    register(
        "avgpool",
        pooling.AvgPoolResampler,
        params=pooling.AvgPoolParams,
        backend="torch",
        description="k x k average pooling then a linear projection",
    )
    register(
        "conv",
        pooling.ConvResampler,
        params=pooling.ConvParams,
        backend="torch",
        description="strided conv over the token grid",
    )
    register(
        "spatial-pool",
        pooling.SpatialPoolResampler,
        aliases=("spatialpool",),
        params=pooling.SpatialPoolParams,
        backend="torch",
        description="adaptive average pool to a fixed grid then an MLP",
    )
    register(
        "masked-drop",
        masked_drop.MaskedDropResampler,
        aliases=("maskeddrop",),
        params=masked_drop.MaskedDropParams,
        backend="torch",
        description="random token drop at train time only, then an MLP",
    )
