"""Running checks: build the subject, run one or all checks, structured results."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cora_kit.registry import REGISTRY, PluginSpec
from cora_kit.testing.base import Check, CheckFailure, CheckResult, CheckSkipped, Subject, checks_for, small_params


def make_subject(kind: str, name: str, params: Mapping[str, Any] | None = None) -> Subject:
    """Look the plugin up (``name`` may be ``dist:name``) and pick its small params."""
    spec = REGISTRY.lookup(kind, name)
    subject = Subject(kind, spec, small_params(spec, params))
    spec.validate_params(dict(subject.params))  # bad user params: PluginParamsError now
    return subject


def declared_expected_failures(spec: PluginSpec) -> dict[str, str]:
    """``{check: reason}`` a plugin declares on its params model as
    ``testing_expected_failures: ClassVar[dict[str, str]]`` (e.g. the no-op loss 'none')."""
    return dict(getattr(spec.params_model, "testing_expected_failures", None) or {})


def run_check(subject: Subject, check: Check, expected_failures: Mapping[str, str] | None = None) -> CheckResult:
    """Run one check; never raises (errors become failed results naming the exception).

    ``expected_failures`` (``{check: reason}``) adds to what the plugin declares itself; an
    expected failure that passes is reported as a failure so the list stays honest."""
    start = time.perf_counter()
    xfail = (declared_expected_failures(subject.spec) | dict(expected_failures or {})).get(check.name)
    try:
        note = check.func(subject)
        status, message = ("passed", note or "")
        if xfail:
            status, message = "failed", f"passed but is listed as an expected failure ({xfail}); remove it"
    except CheckSkipped as exc:
        status, message = "skipped", str(exc)
    except CheckFailure as exc:
        status, message = ("xfailed", f"{exc} [expected: {xfail}]") if xfail else ("failed", str(exc))
    except Exception as exc:  # the plugin crashed: report where, not a traceback
        where = f"{subject.label} raised {type(exc).__name__}: {exc}"
        status, message = ("xfailed", where) if xfail else ("failed", where)
    return CheckResult(subject.kind, subject.spec.qualified_name, check.name, status, message, time.perf_counter() - start)


def run_checks(
    kind: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    checks: list[str] | None = None,
    expected_failures: Mapping[str, str] | None = None,
) -> list[CheckResult]:
    """Run every check of ``kind`` (or only ``checks``) on plugin ``name``."""
    subject = make_subject(kind, name, params)
    selected = [c for c in checks_for(kind) if checks is None or c.name in checks]
    return [run_check(subject, c, expected_failures) for c in selected]


def assert_plugin_passes(kind: str, name: str, params: Mapping[str, Any] | None = None, **kw: Any) -> list[CheckResult]:
    """Run the checks and raise ``CheckFailure`` listing every failure (check: message)."""
    results = run_checks(kind, name, params, **kw)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise CheckFailure("\n".join(f"{r.check}: {r.message}" for r in failed))
    return results


__all__ = ["assert_plugin_passes", "declared_expected_failures", "make_subject", "run_check", "run_checks"]
