"""Checks of every plugin kind: its parameter model and its interface."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel

from cora_kit.hookspecs import KINDS
from cora_kit.interfaces import EncoderParams, LLMParams, PluginParams
from cora_kit.testing.base import INTERFACE, CheckFailure, Subject, expect, register


def check_params_schema(s: Subject) -> str | None:
    """Params model: pydantic, forbids unknown keys, defaults for every field, matches the factory."""
    model = s.spec.params_model
    sig = inspect.signature(s.spec.factory)
    if model is None:
        required = [p.name for p in sig.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        expect(not required, f"{s.label} registers no params model but its factory requires {required};"
               " register params=<pydantic model>")
        return "no parameters"
    expect(issubclass(model, BaseModel), f"{s.label}: params must be a pydantic model, got {model!r}")
    expect(model.model_config.get("extra") == "forbid",
           f"{s.label}: params model {model.__name__} accepts unknown keys (extra={model.model_config.get('extra')!r}); "
           "subclass cora_kit.interfaces.PluginParams or set model_config = ConfigDict(extra='forbid')")
    missing = [n for n, f in model.model_fields.items() if f.is_required()]
    expect(not missing, f"{s.label}: params {missing} have no default; expected every field to default to the seed value")
    model.model_json_schema()
    defaults = model()
    expect(model(**defaults.model_dump()) == defaults, f"{s.label}: params do not round-trip through model_dump()")
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [n for n in model.model_fields if n not in sig.parameters and not takes_kwargs]
    expect(not unknown, f"{s.label}: factory {getattr(s.spec.factory, '__name__', s.spec.factory)} does not accept params {unknown}")
    return f"{len(model.model_fields)} fields"


def _resampler_dims(s: Subject, obj: Any) -> None:
    """A resampler's ``in_dim`` / ``out_dim`` attributes equal its params."""
    want = s.spec.validate_params(dict(s.params))
    for attr in ("in_dim", "out_dim"):
        if attr in want:
            got = getattr(obj, attr, None)
            expect(got == want[attr], f"{s.label}.{attr} is {got}; expected {want[attr]} (its param)")


def check_interface(s: Subject, extra: Callable[[Subject, Any], None] | None = None) -> str | None:
    """The built object implements the kind's interface from cora_kit.interfaces."""
    base = INTERFACE[s.kind]
    factory = s.spec.factory
    if inspect.isclass(factory) and inspect.isabstract(factory):
        missing = ", ".join(sorted(factory.__abstractmethods__))
        raise CheckFailure(f"{s.label}: {factory.__name__} does not implement {missing} of"
                           f" cora_kit.interfaces.{base.__name__} (docs/plugins.md lists what each does)")
    obj = s.make()
    expect(isinstance(obj, base),
           f"{s.label} built a {type(obj).__name__}; expected a subclass of cora_kit.interfaces.{base.__name__}")
    if extra is not None:
        extra(s, obj)
    return type(obj).__name__


def check_params_accept_core_options(s: Subject, base: type[PluginParams], section: str) -> str | None:
    """The params model accepts what the pipeline passes from the config section (encoder:
    ``pretrained``, ``random_init``, ``arch``; LLM: also ``tokenizer``, ``trust_remote_code``)."""
    fields = set(s.spec.params_model.model_fields) if s.spec.params_model is not None else set()
    missing = sorted(set(base.model_fields) - fields)
    expect(not missing, f"{s.label}: params model does not accept {missing}, which the pipeline passes from"
           f" {section}; subclass cora_kit.interfaces.{base.__name__}")
    return None


register(check_params_schema, KINDS)
register(partial(check_interface, extra=_resampler_dims), ["resampler"])
register(check_interface, [k for k in KINDS if k != "resampler"])
register(partial(check_params_accept_core_options, base=EncoderParams, section="model.encoder"), ["encoder"])
register(partial(check_params_accept_core_options, base=LLMParams, section="model.llm"), ["llm"])
