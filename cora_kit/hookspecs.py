"""The cora-kit plugin contract: one registration hook per plugin kind.

Every hook receives a ``register`` callback (llm-style), so one plugin module can
register many things and the core owns names, aliases, conflicts and provenance::

    register(name, factory, *, aliases=(), params=ParamsModel, backend="torch",
             description="...")

``factory(**params)`` builds the plugin; ``params`` is a pydantic model whose fields
are the factory's keyword arguments (the core validates user input through it);
``backend`` is a string or a zero-argument callable returning one (e.g. BiMamba
reports "mamba-ssm CUDA" or "torch scan").

All hooks arrived in cora-kit 0.1.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT_NAME = "cora_kit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class RegisterCallback(Protocol):
    """The ``register`` callback handed to every registration hook."""

    def __call__(
        self,
        name: str,
        factory: Any,
        *,
        aliases: tuple[str, ...] | list[str] = (),
        params: Any = None,
        backend: Any = None,
        description: str = "",
    ) -> None: ...


# --- vision front end -------------------------------------------------------


@hookspec
def register_tilers(register: RegisterCallback) -> None:
    """Register tilers: ERP ``[B,3,H,W]`` -> views ``[B,V,3,s,s]`` + ``TileLayout``.

    :param register: callback, see the module docstring.
    """


@hookspec
def register_encoders(register: RegisterCallback) -> None:
    """Register vision encoders: ``[N,3,s,s]`` -> ``[N,P,Dv]`` on a declared grid.

    :param register: callback, see the module docstring.
    """


@hookspec
def register_resamplers(register: RegisterCallback) -> None:
    """Register resamplers: ``[N,P,Din]`` -> ``[N,P',Dout]`` with a declared output grid.

    :param register: callback, see the module docstring.
    """


# --- alignment and stitching ------------------------------------------------


@hookspec
def register_losses(register: RegisterCallback) -> None:
    """Register overlap losses: features ``[B,V,P,D]`` + correspondences -> (scalar, logs).

    :param register: callback, see the module docstring.
    """


@hookspec
def register_stitchers(register: RegisterCallback) -> None:
    """Register stitchers: ``[B,V,P,D]`` + layout -> ``[B,T,D]`` + token positions.

    :param register: callback, see the module docstring.
    """


# --- language side and evaluation -------------------------------------------


@hookspec
def register_llm_adapters(register: RegisterCallback) -> None:
    """Register LLM adapters: tokenizer + ``inputs_embeds`` causal LM + LoRA.

    :param register: callback, see the module docstring.
    """


@hookspec
def register_metrics(register: RegisterCallback) -> None:
    """Register caption metrics: predictions + grouped references -> scores.

    :param register: callback, see the module docstring.
    """


#: plugin kind -> name of its registration hook
HOOK_FOR_KIND: dict[str, str] = {
    "tiler": "register_tilers",
    "encoder": "register_encoders",
    "resampler": "register_resamplers",
    "loss": "register_losses",
    "stitcher": "register_stitchers",
    "llm": "register_llm_adapters",
    "metric": "register_metrics",
}
KINDS: tuple[str, ...] = tuple(HOOK_FOR_KIND)
