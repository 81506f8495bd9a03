"""pytest glue: one test case per check of one plugin (``@parametrize_checks(kind, name)``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cora_kit.testing.base import Check, CheckFailure, CheckResult, Subject, checks_for
from cora_kit.testing.runner import make_subject, run_check


class BoundCheck:
    """One check bound to one plugin; calling it runs the check (pytest-friendly)."""

    def __init__(
        self, kind: str, name: str, check: Check, params: Mapping[str, Any] | None,
        expected_failures: Mapping[str, str] | None, shared: dict[str, Subject] | None = None,
    ) -> None:
        self.kind, self.name, self.check, self.params, self.expected_failures = kind, name, check, params, expected_failures
        self._shared = shared if shared is not None else {}  # one Subject for all checks of a plugin

    def subject(self) -> Subject:
        if "subject" not in self._shared:
            self._shared["subject"] = make_subject(self.kind, self.name, self.params)
        return self._shared["subject"]

    def __repr__(self) -> str:
        return f"{self.check.name}({self.kind}:{self.name})"

    def __call__(self) -> CheckResult:
        import pytest

        result = run_check(self.subject(), self.check, self.expected_failures)
        if result.status == "skipped":
            pytest.skip(result.message)
        if result.status == "xfailed":
            pytest.xfail(result.message)
        if result.status == "failed":
            raise CheckFailure(result.message)
        return result


def parametrize_checks(kind: str, name: str, params: Mapping[str, Any] | None = None,
                       expected_failures: Mapping[str, str] | None = None) -> Any:
    """``pytest.mark.parametrize("check", ...)`` over the checks of one plugin; ids are check names."""
    import pytest

    shared: dict[str, Subject] = {}
    bound = [BoundCheck(kind, name, c, params, expected_failures, shared) for c in checks_for(kind)]
    return pytest.mark.parametrize("check", bound, ids=[b.check.name for b in bound])


__all__ = ["BoundCheck", "parametrize_checks"]
