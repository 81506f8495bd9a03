"""Plugin choices written as text, parsed once for ``run``, ``bench`` and experiment files.

A choice is ``[dist:]name[:key=value[:key=value...]]``: ``bimamba``, ``cora-kit:mlp``,
``vicreg:variant=pairwise``, ``cora-kit:vicreg:variant=pairwise:gamma=2``. Segments with
``=`` are options (values are YAML: ``25`` is an int, ``true`` a bool, ``pairwise`` a
string); the others are the name, optionally qualified by its distribution. Option flags
(``--resampler-opt k=v``) use the same ``key=value`` rule. In an experiment file a choice
may also be a mapping ``{name: vicreg, options: {variant: pairwise}}`` (for values that
hold ``:`` or ``,``).

How the parsed options are layered onto a config (after a change of plugin has dropped
the old plugin's options) is ``cora_kit.config.resolve_config``'s ``plugin_options``;
``validate_plugin_choices`` then checks every name and option through the plugin's
params model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from cora_kit.errors import ConfigError, CoraKitError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: kept as they are in folder names (and a lone '_'); ':' becomes '+', the rest is %XX-encoded
_FOLDER_SAFE = "-.="
_MAX_FOLDER = 100


def yaml_value(text: str) -> Any:
    """A command-line value read as YAML (``"3"`` -> 3, ``"[a, b]"`` -> list); text that
    is not valid YAML stays a string; an empty value is ``""``."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text.strip()


def _option(text: str, where: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(f"{where}: {text!r} must look like key=value (a plain option name)")
    return key, yaml_value(value)


def parse_option_pairs(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``["k=v", ...]`` from a repeatable option flag -> ``{k: yaml(v)}``."""
    out: dict[str, Any] = {}
    for text in pairs:
        key, value = _option(text, flag)
        out[key] = value
    return out


def render_value(value: Any) -> str:
    """The text form of an option value (inverse of ``yaml_value`` for plain values)."""
    if isinstance(value, str):
        plain = yaml_value(value) == value and not any(c in value for c in ":,")
        return value if plain else json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


@dataclass
class ChoiceText:
    """A parsed plugin choice: ``name`` as written (maybe ``dist:name``) and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Canonical text: ``[dist:]name[:k=v...]`` (options in the order given)."""
        return self.name + "".join(f":{k}={render_value(v)}" for k, v in self.options.items())


def parse_choice(text: str, where: str) -> ChoiceText:
    """``"cora-kit:vicreg:variant=pairwise"`` -> ChoiceText("cora-kit:vicreg", {"variant": "pairwise"}).

    ``where`` names the flag or file for the error message.
    """
    names: list[str] = []
    options: dict[str, Any] = {}
    for part in (p.strip() for p in str(text).split(":")):
        if "=" in part:
            key, value = _option(part, f"{where} {text!r}")
            options[key] = value
        elif options:
            raise ConfigError(f"{where} {text!r}: the plugin name comes before its options ([dist:]name:key=value)")
        else:
            names.append(part)
    if not names or len(names) > 2 or not all(names):
        raise ConfigError(f"{where} {text!r} must look like [dist:]name[:key=value...]")
    return ChoiceText(":".join(names), options)


def choice_from_value(value: Any, where: str) -> ChoiceText:
    """An experiment-file entry: ``"name[:k=v]"`` or ``{name: ..., options: {...}}``."""
    if isinstance(value, str):
        return parse_choice(value, where)
    if isinstance(value, Mapping) and isinstance(value.get("name"), str) and set(value) <= {"name", "options"}:
        base = parse_choice(value["name"], where)
        opts = value.get("options") or {}
        if not isinstance(opts, Mapping) or not all(isinstance(k, str) and _KEY.match(k) for k in opts):
            raise ConfigError(f"{where}: 'options' must map option names to values; got {opts!r}")
        return ChoiceText(base.name, {**base.options, **dict(opts)})
    raise ConfigError(f"{where}: expected 'name', 'name:key=value' or {{name: ..., options: {{...}}}}; got {value!r}")


def same_plugin(kind: str, a: Any, b: Any) -> bool:
    """Whether two names select one plugin (``cora-kit:mlp`` and ``mlp``, an alias and its
    name); names the registry does not know are compared as text. A name that two
    distributions register raises ``PluginConflictError``."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    from cora_kit.errors import UnknownPluginError
    from cora_kit.registry import REGISTRY

    try:
        return REGISTRY.lookup(kind, a) is REGISTRY.lookup(kind, b)
    except UnknownPluginError:
        return False


def validate_plugin_choices(config: Any) -> None:
    """Check every plugin name and its options, and every metric name, against the
    registry (early, clear errors). ``config`` is a ``CoraConfig`` (re-exported there)."""
    from cora_kit.registry import REGISTRY

    m = config.model
    for kind, choice, key in (
        ("tiler", m.tiler, "model.tiler"),
        ("encoder", m.encoder, "model.encoder"),
        ("resampler", m.resampler, "model.resampler"),
        ("loss", m.loss, "model.loss"),
        ("stitcher", m.stitcher, "model.stitcher"),
        ("llm", m.llm, "model.llm"),
    ):
        spec = REGISTRY.lookup(kind, choice.name)
        try:
            spec.validate_params(dict(choice.options))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{key}.options: {exc}") from None
    for name in config.eval.metrics:
        try:
            REGISTRY.lookup("metric", name)
        except ConfigError:
            raise
        except CoraKitError as exc:
            raise ConfigError(f"eval.metrics: {exc}") from None


def split_choices(text: str | None) -> list[str]:
    """A comma-separated flag value (``--losses none,vicreg:variant=pairwise``) -> entries."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def folder_name(label: str) -> str:
    """A file-name-safe, unambiguous form of a choice label, readable for plain names.

    Plain names and options (``[A-Za-z0-9._=-]``) stay as they are; ``:`` becomes ``+``;
    every other character (``+``, ``%``, ``/``, space, ...) is percent-encoded, and so is an
    ``_`` that starts or ends the label or touches another ``_``, so a folder name never
    holds ``__`` (the separator of a cell's parts) and two labels never share a folder
    (``cora-kit:mlp`` -> ``cora-kit+mlp``, ``e2p:num_tiles=8`` -> ``e2p+num_tiles=8``).
    Names longer than 100 characters keep a prefix and a hash of the whole label.
    """
    out = []
    for i, ch in enumerate(label):
        if ch == ":":
            out.append("+")
        elif ch == "_":
            alone = 0 < i < len(label) - 1 and label[i - 1] != "_" and label[i + 1] != "_"
            out.append("_" if alone else "%5F")
        elif ch.isascii() and (ch.isalnum() or ch in _FOLDER_SAFE):
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
    name = "".join(out)
    if len(name) > _MAX_FOLDER:
        digest = hashlib.sha1(label.encode("utf-8")).hexdigest()[:12]
        name = name[: _MAX_FOLDER - 14] + "%7E" + digest  # '~' is always encoded, so no clash
    return name


__all__ = [
    "ChoiceText",
    "choice_from_value",
    "folder_name",
    "parse_choice",
    "parse_option_pairs",
    "render_value",
    "same_plugin",
    "split_choices",
    "validate_plugin_choices",
    "yaml_value",
]
