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
import warnings
from importlib.metadata import entry_points
from typing import Any

import pluggy

from cora_kit import hookspecs
from cora_kit.errors import CoraKitError, PluginConflictError, PluginParamsError, UnknownPluginError
from cora_kit.plugin_spec import (
    BUILTIN_DISTRIBUTION,
    NAME_PATTERN,
    Collector,
    LoadFailure,
    PluginInfo,
    PluginSpec,
    Provenance,
    canonical_dist,
)


class PluginLoadWarning(UserWarning):
    """Emitted once per load when some plugin distribution failed to load."""


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
                    impl.function(register=Collector(kind, prov, collected))
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
        if dist is not None:
            msg = self._unknown_in_distribution(kind, name, dist, specs)
        else:
            every = sorted({n for s in specs for n in (s.name, *s.aliases)})
            close = difflib.get_close_matches(name.lower(), every, n=3, cutoff=0.6)
            msg = f"unknown {kind} '{name}'"
            if close:
                msg += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        names = sorted({s.name for s in specs})
        msg += f" Available {kind}s: {', '.join(names) or 'none'} (see 'cora-kit plugins')."
        if self._failures:
            msg += " Plugins that failed to load: " + "; ".join(f.line() for f in self._failures)
        return msg

    @staticmethod
    def _unknown_in_distribution(kind: str, name: str, dist: str, specs: list[PluginSpec]) -> str:
        """``dist:name`` found nothing: say whether the distribution or the name is wrong."""
        key = name.strip().lower()
        dists = sorted({s.distribution for s in specs})
        own = [s for s in specs if canonical_dist(s.distribution) == canonical_dist(dist)]
        owners = sorted({s.distribution for s in specs if key == s.name or key in s.aliases})
        if not own:
            close = difflib.get_close_matches(canonical_dist(dist), dists, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            msg = f"unknown {kind} '{dist}:{name}': no installed distribution '{dist}' registers {kind}s{hint};"
            msg += f" distributions with {kind}s: {', '.join(dists) or 'none'}."
        else:
            mine = sorted(s.name for s in own)
            close = difflib.get_close_matches(key, sorted({n for s in own for n in (s.name, *s.aliases)}), n=1, cutoff=0.6)
            hint = f"; did you mean '{own[0].distribution}:{close[0]}'?" if close else "."
            msg = (f"unknown {kind} '{dist}:{name}': distribution '{own[0].distribution}' has no {kind} '{name}'"
                   f" (its {kind}s: {', '.join(mine)}){hint}")
        if owners:
            msg += f" '{name}' is registered by {' and '.join(owners)}: use " + " or ".join(f"'{o}:{name}'" for o in owners) + "."
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
        """Build a plugin instance with validated params. A ``ValueError`` of the factory
        (a combination of values it rejects) becomes a ``PluginParamsError`` naming the plugin."""
        spec = self.lookup(kind, name)
        values = spec.validate_params(params)
        try:
            instance = spec.factory(**values)
        except CoraKitError:
            raise
        except ValueError as exc:
            raise PluginParamsError(f"{kind} '{spec.name}' rejected its parameters: {exc}") from exc
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


__all__ = [
    "BUILTIN_DISTRIBUTION",
    "NAME_PATTERN",
    "LoadFailure",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginSpec",
    "REGISTRY",
    "Registry",
    "canonical_dist",
]
