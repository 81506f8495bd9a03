"""What the registry records about each plugin, and the ``register`` callback that records it.

``PluginSpec`` (internal: factory, params model, backend, provenance), ``PluginInfo`` (the
public view ``cora-kit plugins`` lists), ``LoadFailure`` (a distribution that failed to load)
and ``Collector``, the ``register(name, factory, ...)`` callback handed to one plugin's
registration hook (it validates names and records where each plugin came from).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from cora_kit.errors import PluginParamsError

BUILTIN_DISTRIBUTION = "cora-kit"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


def canonical_dist(name: str) -> str:
    """PEP 503 normalisation: ``Cora_Kit.Barlow`` -> ``cora-kit-barlow``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Provenance:
    """Where a registered plugin object came from."""

    distribution: str
    version: str
    entry_point: str


@dataclass
class PluginSpec:
    """One registered plugin (internal record; ``PluginInfo`` is the public view)."""

    kind: str
    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...]
    params_model: type[BaseModel] | None
    backend: str | Callable[[], str] | None
    description: str
    provenance: Provenance

    @property
    def distribution(self) -> str:
        return self.provenance.distribution

    @property
    def qualified_name(self) -> str:
        return f"{self.provenance.distribution}:{self.name}"

    def resolve_backend(self) -> str | None:
        """The backend string; a callable backend is asked now (errors are reported)."""
        if self.backend is None or isinstance(self.backend, str):
            return self.backend
        try:
            return str(self.backend())
        except Exception as exc:  # a broken probe must not break listing
            return f"unknown ({type(exc).__name__}: {exc})"

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate user params through the plugin's pydantic model.

        ``None`` values are dropped so that defaults survive (timm's rule).
        Raises ``PluginParamsError`` naming the offending field.
        """
        params = {k: v for k, v in params.items() if v is not None}
        label = f"{self.kind} '{self.name}'"
        if self.params_model is None:
            if params:
                raise PluginParamsError(
                    f"{label} takes no parameters; got {', '.join(sorted(params))}"
                )
            return {}
        fields = self.params_model.model_fields
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise PluginParamsError(
                f"{label}: unknown parameter '{unknown[0]}'"
                f" (accepted: {', '.join(sorted(fields)) or 'none'})"
            )
        try:
            model = self.params_model(**params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "?"
            raise PluginParamsError(
                f"{label}: invalid parameter '{where}': {first['msg']}"
                f" (got {first.get('input')!r})"
            ) from None
        return {name: getattr(model, name) for name in fields}

    def info(self, status: str = "ok", error: str | None = None) -> PluginInfo:
        schema = self.params_model.model_json_schema() if self.params_model else {}
        return PluginInfo(
            name=self.name,
            kind=self.kind,
            aliases=list(self.aliases),
            distribution=self.provenance.distribution,
            version=self.provenance.version,
            backend=self.resolve_backend(),
            status=status,
            error=error,
            params=schema,
            description=self.description,
        )


class PluginInfo(BaseModel):
    """Public description of a plugin, as listed by ``cora-kit plugins``."""

    name: str
    kind: str
    aliases: list[str] = Field(default_factory=list)
    distribution: str
    version: str
    backend: str | None = None
    status: str = "ok"
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class LoadFailure:
    """A plugin distribution that could not be imported, validated or registered."""

    plugin: str
    distribution: str
    version: str
    error: str

    def info(self) -> PluginInfo:
        return PluginInfo(
            name=self.plugin,
            kind="unknown",
            distribution=self.distribution,
            version=self.version,
            status="error",
            error=self.error,
        )

    def line(self) -> str:
        return f"plugin '{self.plugin}' from {self.distribution} {self.version}: {self.error}"


class Collector:
    """The ``register`` callback given to one plugin's registration hook."""

    def __init__(self, kind: str, provenance: Provenance, out: list[PluginSpec]) -> None:
        self.kind = kind
        self.provenance = provenance
        self.out = out

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        aliases: Iterable[str] = (),
        params: type[BaseModel] | None = None,
        backend: str | Callable[[], str] | None = None,
        description: str = "",
    ) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ValueError(
                f"{self.kind} name {name!r} must be lowercase kebab-case, e.g. 'c-abstractor'"
            )
        aliases = tuple(aliases)
        for alias in aliases:
            if not ALIAS_PATTERN.match(alias):
                raise ValueError(f"{self.kind} alias {alias!r} of '{name}' must be lowercase")
        if not callable(factory):
            raise TypeError(f"{self.kind} '{name}': factory must be callable, got {factory!r}")
        if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise TypeError(f"{self.kind} '{name}': params must be a pydantic model class")
        if not description and getattr(factory, "__doc__", None):
            description = (factory.__doc__ or "").strip().splitlines()[0]
        self.out.append(
            PluginSpec(
                kind=self.kind,
                name=name,
                factory=factory,
                aliases=aliases,
                params_model=params,
                backend=backend,
                description=description,
                provenance=self.provenance,
            )
        )


__all__ = [
    "ALIAS_PATTERN",
    "BUILTIN_DISTRIBUTION",
    "Collector",
    "LoadFailure",
    "NAME_PATTERN",
    "PluginInfo",
    "PluginSpec",
    "Provenance",
    "canonical_dist",
]
