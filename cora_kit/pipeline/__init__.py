"""The pipeline: ``CoraModel`` built from plugin names, and the seed's freeze schedule.

``CoraModel.from_config(config)`` builds every component through the registry (the core
never imports a concrete plugin). Modules: ``build`` (components from plugin names,
interface checks), ``schedule`` (the three-stage table, ``set_stage``, optimizer groups,
stage checkpoints), ``model`` (``CoraModel``: vision path, losses, decoding, metadata).
"""

from __future__ import annotations

from cora_kit.pipeline.model import CoraModel
from cora_kit.pipeline.schedule import FROZEN_MODULES, SCHEDULE, STAGES

__all__ = ["FROZEN_MODULES", "SCHEDULE", "STAGES", "CoraModel"]
