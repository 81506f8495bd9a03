"""Entry point module: registers ``barlow`` (loss) and ``linear`` (resampler)."""

from __future__ import annotations

from cora_kit import hookimpl


@hookimpl
def register_resamplers(register):
    from cora_kit_barlow.linear import LinearParams, LinearResampler

    register("linear", LinearResampler, params=LinearParams, backend="torch",
             description="one linear layer per token")


@hookimpl
def register_losses(register):
    from cora_kit_barlow.loss import BarlowParams, BarlowTwinsLoss

    register("barlow", BarlowTwinsLoss, params=BarlowParams, backend="torch",
             description="Barlow Twins redundancy reduction on overlap correspondences")
