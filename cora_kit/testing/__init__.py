"""Conformance checks for cora-kit plugins (the model: scikit-learn's ``check_estimator``).

Each plugin kind has named checks (``check_output_shape``, ``check_gradients_flow``, ...);
each check builds the plugin at a small config, feeds it small inputs and raises
``CheckFailure`` with what was expected, what was got and what to do. Use them:

* from pytest, in a plugin package's tests::

      from cora_kit.testing import parametrize_checks

      @parametrize_checks("resampler", "my-resampler")
      def test_cora_kit_contract(check):
          check()

* programmatically: ``run_checks("resampler", "my-resampler") -> list[CheckResult]``;
* from the shell: ``cora-kit check-plugin my-resampler``.

Small configs: a plugin's params model may set ``testing_params: ClassVar[dict]`` (e.g.
``{"num_layers": 1}``); resamplers also get ``in_dim``/``out_dim`` of 32/48 (32/32 when the
defaults are equal) and ``hidden_dim`` 64. ``params=`` overrides both. A loss that is exactly
zero when the two sides of every correspondence are identical declares
``zero_for_identical_pairs = True``.

Modules: ``base`` (results, subject, check registry), ``fixtures`` (layouts and
correspondences), ``checks_common`` (every kind), ``checks_modules`` (resampler, encoder),
``checks_loss``, ``checks_stitcher``, ``checks_tiler``, ``checks_metric``, ``checks_llm``,
``runner`` (run and collect) and ``parametrize`` (pytest glue).
"""

from __future__ import annotations

# importing the check modules registers their checks, in this order
from cora_kit.testing import checks_common, checks_modules, checks_loss, checks_stitcher  # noqa: F401
from cora_kit.testing import checks_tiler, checks_metric, checks_llm  # noqa: F401
from cora_kit.testing.base import (
    CHECKS,
    GRID,
    INTERFACE,
    Check,
    CheckFailure,
    CheckResult,
    CheckSkipped,
    Subject,
    checks_for,
    small_params,
)
from cora_kit.testing.fixtures import strip_correspondences, tile_layout, world_features
from cora_kit.testing.parametrize import BoundCheck, parametrize_checks
from cora_kit.testing.runner import (
    assert_plugin_passes,
    declared_expected_failures,
    make_subject,
    run_check,
    run_checks,
)

__all__ = [
    "CHECKS",
    "GRID",
    "INTERFACE",
    "BoundCheck",
    "Check",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "Subject",
    "assert_plugin_passes",
    "checks_for",
    "declared_expected_failures",
    "make_subject",
    "parametrize_checks",
    "run_check",
    "run_checks",
    "small_params",
    "strip_correspondences",
    "tile_layout",
    "world_features",
]
