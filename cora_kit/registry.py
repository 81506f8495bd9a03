"""The plugin registry: a small typed facade over one pluggy ``PluginManager``.

Loading order (tox-style): third-party entry points first, built-ins (distribution
``cora-kit``) after, then ``check_pending()`` so a misspelt hook is reported. Each
registration hook is called per plugin, by keyword, with a ``register`` callback that
knows which distribution is registering, so the registry records provenance and
detects two distributions claiming one name.

Environment:
    ``CORA_KIT_DISABLE_PLUGIN_AUTOLOAD=1``  load the built-ins only.
    ``CORA_KIT_PLUGINS=a,b``               load the built-ins plus only these third-party
                                           distributions (empty: built-ins only).
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy
from pydantic import BaseModel, Field, ValidationError

from cora_kit import hookspecs
from cora_kit.errors import (
    CoraKitError,
    PluginConflictError,
    PluginLoadError,
    PluginParamsError,
    UnknownPluginError,
)

BUILTIN_DISTRIBUTION = "cora-kit"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")


class PluginLoadWarning(UserWarning):
    """Emitted once per load when some plugin distribution failed to load."""


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


def _is_builtin(dist: str) -> bool:
    return canonical_dist(dist) == BUILTIN_DISTRIBUTION


class Registry:
    """Owns the plugin manager, the name index and load failures. Run once, resettable."""

    def __init__(self) -> None:
        self._pm: pluggy.PluginManager | None = None
        self._provenance: dict[str, Provenance] = {}
        self._failures: list[LoadFailure] = []
        self._specs: dict[str, list[PluginSpec]] | None = None
        self._warned = False

    # -- loading -------------------------------------------------------------

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The loaded pluggy manager (loads entry points on first access)."""
        if self._pm is None:
            self._load()
        assert self._pm is not None
        return self._pm

    def reset(self) -> None:
        """Forget everything; the next use loads entry points afresh."""
        self.__init__()  # type: ignore[misc]

    def _load(self) -> None:
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        self._pm = pm
        disable = os.environ.get("CORA_KIT_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0")
        only_env = os.environ.get("CORA_KIT_PLUGINS")
        only = (
            {canonical_dist(d) for d in only_env.split(",") if d.strip()}
            if only_env is not None
            else None
        )
        found = list(entry_points(group=hookspecs.PROJECT_NAME))
        external = [ep for ep in found if not _is_builtin(_dist_name(ep))]
        builtin = [ep for ep in found if _is_builtin(_dist_name(ep))]
        if disable:
            external = []
        elif only is not None:
            external = [ep for ep in external if canonical_dist(_dist_name(ep)) in only]
        # pluggy calls the last registered first: built-ins after external ones.
        for ep in sorted(external, key=_ep_key) + sorted(builtin, key=_ep_key):
            dist, version = _dist_name(ep), _dist_version(ep)
            plugin_name = f"{dist}:{ep.name}"
            try:
                module = ep.load()
                pm.register(module, name=plugin_name)
            except Exception as exc:
                if _is_builtin(dist):
                    raise
                self._failures.append(
                    LoadFailure(plugin_name, dist, version, f"{type(exc).__name__}: {exc}")
                )
                continue
            self._provenance[plugin_name] = Provenance(dist, version, ep.name)

    def register_plugin(
        self, plugin: object, name: str, distribution: str | None = None, version: str = "0"
    ) -> None:
        """Register a plugin object directly (tests, notebooks). Undo with ``unregister_plugin``."""
        self.plugin_manager.register(plugin, name=name)
        self._provenance[name] = Provenance(distribution or name, version, name)
        self._specs = None

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin registered with ``register_plugin``."""
        pm = self.plugin_manager
        plugin = pm.get_plugin(name)
        if plugin is not None:
            pm.unregister(plugin, name=name)
        self._provenance.pop(name, None)
        self._failures = [f for f in self._failures if f.plugin != name]
        self._specs = None

    def _check_pending(self) -> None:
        """``check_pending()`` until clean; a third-party offender is reported and dropped."""
        pm = self.plugin_manager
        while True:
            try:
                pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = pm.get_name(exc.plugin) or repr(exc.plugin)
                prov = self._provenance.get(name, Provenance(name, "?", name))
                if _is_builtin(prov.distribution):
                    raise
                hooks = [h for h in dir(exc.plugin) if h.startswith("register")]
                hint = _hook_hint(hooks)
                pm.unregister(exc.plugin)
                self._failures.append(
                    LoadFailure(name, prov.distribution, prov.version, f"{exc}{hint}")
                )

    def _index(self) -> dict[str, list[PluginSpec]]:
        if self._specs is not None:
            return self._specs
        pm = self.plugin_manager
        self._check_pending()
        specs: dict[str, list[PluginSpec]] = {kind: [] for kind in hookspecs.KINDS}
        for kind, hook_name in hookspecs.HOOK_FOR_KIND.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                prov = self._provenance.get(
                    impl.plugin_name, Provenance(impl.plugin_name, "0", impl.plugin_name)
                )
                collected: list[PluginSpec] = []
                try:
                    impl.function(register=_Collector(kind, prov, collected))
                except Exception as exc:
                    if _is_builtin(prov.distribution):
                        raise
                    self._failures.append(
                        LoadFailure(
                            impl.plugin_name,
                            prov.distribution,
                            prov.version,
                            f"{hook_name} failed: {type(exc).__name__}: {exc}",
                        )
                    )
                    continue
                specs[kind].extend(collected)
        for kind_specs in specs.values():
            kind_specs.sort(key=lambda s: (s.name, s.provenance.distribution))
        self._specs = specs
        return specs

    # -- queries -------------------------------------------------------------

    @property
    def failures(self) -> list[LoadFailure]:
        """Plugin distributions that failed to load (after loading everything)."""
        self._index()
        return list(self._failures)

    def specs(self, kind: str | None = None) -> list[PluginSpec]:
        """All registered specs of one kind (or all kinds), in a stable order."""
        index = self._index()
        kinds = hookspecs.KINDS if kind is None else (_check_kind(kind),)
        return [spec for k in kinds for spec in index[k]]

    def conflicts(self, spec: PluginSpec) -> list[PluginSpec]:
        """Specs of other distributions that claim one of ``spec``'s names."""
        names = {spec.name, *spec.aliases}
        return [
            other
            for other in self._index()[spec.kind]
            if other.distribution != spec.distribution and names & {other.name, *other.aliases}
        ]

    def lookup(self, kind: str, name: str) -> PluginSpec:
        """Find a plugin by name, alias or ``dist:name``."""
        kind = _check_kind(kind)
        self._warn_failures()
        dist = None
        if ":" in name:
            dist, name = name.split(":", 1)
        key = name.strip().lower()
        candidates = [s for s in self._index()[kind] if key == s.name or key in s.aliases]
        if dist is not None:
            candidates = [s for s in candidates if canonical_dist(s.distribution) == canonical_dist(dist)]
        if not candidates:
            raise UnknownPluginError(self._unknown_message(kind, name, dist))
        dists = sorted({s.distribution for s in candidates})
        if len(dists) > 1:
            raise PluginConflictError(
                f"{kind} name '{name}' is registered by {len(dists)} distributions: "
                f"{' and '.join(dists)}; select one with "
                + " or ".join(f"'{d}:{candidates[0].name}'" for d in dists)
            )
        if len(candidates) > 1:
            raise PluginConflictError(
                f"{kind} name '{name}' is registered twice by {dists[0]}"
            )
        return candidates[0]

    def _unknown_message(self, kind: str, name: str, dist: str | None) -> str:
        specs = self._index()[kind]
        names = sorted({s.name for s in specs})
        every = sorted({n for s in specs for n in (s.name, *s.aliases)})
        close = difflib.get_close_matches(name.lower(), every, n=3, cutoff=0.6)
        where = f" in distribution '{dist}'" if dist else ""
        msg = f"unknown {kind} '{name}'{where}"
        if close:
            msg += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        msg += f" Available {kind}s: {', '.join(names) or 'none'} (see 'cora-kit plugins')."
        if self._failures:
            msg += " Plugins that failed to load: " + "; ".join(f.line() for f in self._failures)
        return msg

    def _warn_failures(self) -> None:
        if self._failures and not self._warned:
            self._warned = True
            warnings.warn(
                "some cora-kit plugins failed to load: "
                + "; ".join(f.line() for f in self._failures),
                PluginLoadWarning,
                stacklevel=3,
            )

    def create(self, kind: str, name: str, **params: Any) -> Any:
        """Build a plugin instance with validated params."""
        spec = self.lookup(kind, name)
        values = spec.validate_params(params)
        instance = spec.factory(**values)
        try:
            instance.plugin_spec = spec
        except (AttributeError, TypeError):
            pass
        return instance

    def list_plugins(self, kind: str | None = None, pattern: str | None = None) -> list[PluginInfo]:
        """``PluginInfo`` for every plugin (and load failure when ``kind`` is None)."""
        import fnmatch

        infos: list[PluginInfo] = []
        for spec in self.specs(kind):
            clash = self.conflicts(spec)
            info = spec.info()
            if clash:
                others = ", ".join(sorted({c.distribution for c in clash}))
                info.error = (
                    f"name also registered by {others}; select with '{spec.qualified_name}'"
                )
            infos.append(info)
        if kind is None:
            infos.extend(f.info() for f in self._failures)
        if pattern:
            infos = [i for i in infos if fnmatch.fnmatch(i.name, pattern)]
        return infos


class _Collector:
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


def _check_kind(kind: str) -> str:
    if kind not in hookspecs.KINDS:
        close = difflib.get_close_matches(kind, hookspecs.KINDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise CoraKitError(
            f"unknown plugin kind '{kind}'{hint} Kinds: {', '.join(hookspecs.KINDS)}"
        )
    return kind


def _hook_hint(hooks: list[str]) -> str:
    for hook in hooks:
        if hook not in hookspecs.HOOK_FOR_KIND.values():
            close = difflib.get_close_matches(hook, list(hookspecs.HOOK_FOR_KIND.values()), n=1)
            if close:
                return f" (did you mean '{close[0]}' instead of '{hook}'?)"
    return ""


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "unknown"


def _dist_version(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else "?"


def _ep_key(ep: Any) -> tuple[str, str]:
    return (canonical_dist(_dist_name(ep)), ep.name)


#: the process-wide registry used by ``cora_kit.create`` and the CLI
REGISTRY = Registry()


def get_registry() -> Registry:
    """The process-wide registry."""
    return REGISTRY


__all__ = [
    "BUILTIN_DISTRIBUTION",
    "LoadFailure",
    "PluginInfo",
    "PluginLoadError",
    "PluginLoadWarning",
    "PluginSpec",
    "REGISTRY",
    "Registry",
    "get_registry",
]
