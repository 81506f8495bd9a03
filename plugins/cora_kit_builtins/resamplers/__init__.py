"""Built-in resamplers (registered through the `cora_kit` entry point `resamplers`).

Modules are imported inside the hook so that listing plugins stays cheap and one
resampler's optional dependency cannot break the others.
"""

from __future__ import annotations

import importlib

from cora_kit.hookspecs import RegisterCallback, hookimpl


def _bimamba_backend() -> str:
    """What ``backend="auto"`` picks here (mamba-ssm is imported lazily, only to check)."""
    from cora_kit_builtins.resamplers.mamba_block import auto_backend_label

    return auto_backend_label()


#: (name, module, class, params class, aliases, description); ``backend`` is "torch" except bimamba
BUILTINS: tuple[tuple[str, str, str, str, tuple[str, ...], str], ...] = (
    ("identity", "identity", "IdentityResampler", "IdentityParams", (), "keeps tokens unchanged; the latent width is the encoder's"),
    ("mlp", "mlp", "MLPResampler", "MLPParams", (), "LLaVA-style 3-layer MLP with LayerNorm (seed comparison)"),
    ("bimamba", "bimamba", "BiMambaResampler", "BiMambaParams", (),
     "bidirectional Mamba SSM over each view's tokens (seed default)"),
    ("c-abstractor", "c_abstractor", "CAbstractorResampler", "CAbstractorParams", ("cabstractor",),
     "Honeybee convolutional abstractor (dwconv + SE blocks, optional pooling)"),
    ("perceiver", "perceiver", "PerceiverResampler", "PerceiverParams", (),
     "Flamingo perceiver: learned latents cross-attend to the tokens"),
    ("qformer", "qformer", "QFormerResampler", "QFormerParams", ("q-former",),
     "BLIP-2-style learned queries with self- and cross-attention"),
    ("avgpool", "pooling", "AvgPoolResampler", "AvgPoolParams", (), "k x k average pooling then a linear projection"),
    ("conv", "pooling", "ConvResampler", "ConvParams", (), "strided conv over the token grid"),
    ("spatial-pool", "pooling", "SpatialPoolResampler", "SpatialPoolParams", ("spatialpool",),
     "adaptive average pool to a fixed grid then an MLP"),
    ("masked-drop", "masked_drop", "MaskedDropResampler", "MaskedDropParams", ("maskeddrop",),
     "an MLP, then a random share of tokens masked at train time only (the grid is kept)"),
)


@hookimpl
def register_resamplers(register: RegisterCallback) -> None:
    """Register the built-in resamplers (``BUILTINS``)."""
    for name, module_name, cls, params, aliases, description in BUILTINS:
        module = importlib.import_module(f"cora_kit_builtins.resamplers.{module_name}")
        register(
            name,
            getattr(module, cls),
            aliases=aliases,
            params=getattr(module, params),
            backend=_bimamba_backend if name == "bimamba" else "torch",
            description=description,
        )
