"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow.

``metrics.jsonl`` is always written (``RunDir.log_metrics``); ``logging.loggers`` in the
config (``cora-kit run --logger tensorboard --logger wandb ...``) adds trackers, each
through its own library, installed as an optional extra (``pip install
"cora-kit[tensorboard]"``, ``[wandb]``, ``[mlflow]``). A tracker whose library is missing
is a one-line ``TrackerError`` before any training starts, never a silent skip.

Every tracker receives the same rows as ``metrics.jsonl``::

    {"stage": 2, "step": 50, "loss": 1.23, "lm/seq_len": 104.0, ...}

logged as ``stage2/loss`` at step 50 (each stage counts its own optimizer steps), and at
the end the test scores as ``test/<condition>/<metric>`` and the Stage-1 diagnostics as
``diagnostics/<before|after>/<name>``. Only DDP rank 0 opens trackers.

Where the data goes: TensorBoard ``<run>/tensorboard/``; W&B ``<run>/wandb/`` (mode from
``logging.wandb_mode``, else ``WANDB_MODE``; ``offline`` needs no account); MLflow
``logging.mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite store
``<runs folder>/mlflow.db`` shared by the runs of one output folder.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cora_kit.errors import CoraKitError

#: logger name -> (import name that must be importable, pip extra that installs it)
LIBRARIES: dict[str, tuple[tuple[str, ...], str]] = {
    "jsonl": ((), ""),
    "tensorboard": (("tensorboard",), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "mlflow"),
}
LOGGERS = tuple(LIBRARIES)


class TrackerError(CoraKitError):
    """A requested tracker cannot run (library missing, or it refused to start)."""


class Tracker(Protocol):
    """One experiment tracker: scalars per stage and step, final values, close."""

    name: str

    def log(self, row: Mapping[str, Any]) -> None: ...
    def log_final(self, values: Mapping[str, float]) -> None: ...
    def close(self, failed: bool = False) -> None: ...


def check_available(loggers: Sequence[str]) -> None:
    """``TrackerError`` naming the first requested tracker whose library is missing."""
    for name in loggers:
        if name not in LIBRARIES:
            raise TrackerError(f"unknown logger {name!r}; choose from {', '.join(LOGGERS)}")
        modules, extra = LIBRARIES[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            raise TrackerError(
                f"--logger {name} needs the Python package(s) {', '.join(missing)}, which are not installed;"
                f' pip install "cora-kit[{extra}]"'
            )


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric values of a metrics row, keyed ``stage<k>/<name>``."""
    stage = row.get("stage")
    prefix = f"stage{stage}/" if stage is not None else ""
    out = {}
    for key, value in row.items():
        if key in ("stage", "step") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[prefix + key] = float(value)
    return out


def final_values(scores: Mapping[str, Any] | None, diagnostics: Mapping[str, Any] | None) -> dict[str, float]:
    """``test/<condition>/<metric>`` and ``diagnostics/<before|after>/<name>`` scalars."""
    out: dict[str, float] = {}
    for cond, values in (scores or {}).items():
        if isinstance(values, Mapping):
            for key, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                    out[f"test/{cond}/{key}"] = float(v)
    for when in ("before", "after"):
        for key, v in ((diagnostics or {}).get(when) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                out[f"diagnostics/{when}/{key}"] = float(v)
    return out


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"model.resampler.name": "bimamba", ...}`` (string values)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = str(value)
    return out


# --- the trackers ---------------------------------------------------------------------


class TensorBoardTracker:
    """``torch.utils.tensorboard.SummaryWriter`` writing into ``<run>/tensorboard``."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flatten(config).items()), 0)

    def log(self, row: Mapping[str, Any]) -> None:
        step = int(row.get("step", 0))
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, step)

    def log_final(self, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, 0)

    def close(self, failed: bool = False) -> None:
        self.writer.flush()
        self.writer.close()


class WandbTracker:
    """One W&B run per cora-kit run; each stage's metrics use its own step axis."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], project: str, mode: str | None,
                 entity: str | None, group: str | None) -> None:
        import wandb

        self.wandb = wandb
        kwargs: dict[str, Any] = {"project": project, "name": Path(run_dir).name, "dir": str(run_dir),
                                  "config": dict(config), "reinit": "create_new"}
        if mode is not None:
            kwargs["mode"] = mode
        if entity is not None:
            kwargs["entity"] = entity
        if group is not None:
            kwargs["group"] = group
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(**kwargs)
        except Exception as exc:  # no API key, no network, bad entity ...
            raise TrackerError(
                f"wandb could not start a run ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''});"
                " run `wandb login`, or set logging.wandb_mode=offline (WANDB_MODE=offline)"
            ) from None
        self._stages: set[str] = set()

    def log(self, row: Mapping[str, Any]) -> None:
        stage = f"stage{row.get('stage')}"
        if stage not in self._stages:
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
            self._stages.add(stage)
        self.run.log({**scalars(row), f"{stage}/step": int(row.get("step", 0))})

    def log_final(self, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
        # offline runs are written by wandb's service process: wait for it to flush
        self.wandb.teardown()


class MlflowTracker:
    """One MLflow run (experiment ``logging.project``); metrics keyed per stage with steps."""

    name = "mlflow"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], project: str, tracking_uri: str | None) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("alembic").setLevel(logging.WARNING)  # no schema-migration chatter
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_mlflow_uri(run_dir)
        self.tracking_uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(project)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(project)
            self.run_id = self.client.create_run(exp_id, run_name=Path(run_dir).name).info.run_id
        except Exception as exc:
            raise TrackerError(
                f"mlflow could not start a run at {uri} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            ) from None
        params = flatten(config)
        from mlflow.entities import Param

        batch = [Param(k[:250], v[:6000]) for k, v in params.items()]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start : start + 100])
        self.client.set_tag(self.run_id, "cora_kit.run_dir", str(Path(run_dir).resolve()))

    def log(self, row: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(row.get("step", 0))
        metrics = [Metric(k, v, now, step) for k, v in scalars(row).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_final(self, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if values:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items()])

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def default_mlflow_uri(run_dir: Path) -> str:
    """A local SQLite store beside the run folders: ``<runs folder>/mlflow.db``."""
    return "sqlite:///" + str((Path(run_dir).parent / "mlflow.db").resolve())


# --- the set a run uses ---------------------------------------------------------------


class Trackers:
    """The trackers of one run (rank 0); ``Trackers.none()`` on the other ranks."""

    def __init__(self, trackers: Sequence[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    @classmethod
    def none(cls) -> Trackers:
        return cls()

    @classmethod
    def open(cls, loggers: Sequence[str], run_dir: Path, config: Mapping[str, Any], project: str = "cora-kit",
             wandb_mode: str | None = None, wandb_entity: str | None = None, group: str | None = None,
             mlflow_tracking_uri: str | None = None) -> Trackers:
        """Start every tracker of ``loggers`` (``jsonl`` is the run's own metrics.jsonl)."""
        check_available(loggers)
        opened: list[Tracker] = []
        try:
            for name in dict.fromkeys(loggers):
                if name == "tensorboard":
                    opened.append(TensorBoardTracker(run_dir, config))
                elif name == "wandb":
                    opened.append(WandbTracker(run_dir, config, project, wandb_mode, wandb_entity, group))
                elif name == "mlflow":
                    opened.append(MlflowTracker(run_dir, config, project, mlflow_tracking_uri))
        except BaseException:
            for t in opened:
                t.close(failed=True)
            raise
        return cls(opened)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def log(self, row: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log(row)

    def log_final(self, scores: Mapping[str, Any] | None, diagnostics: Mapping[str, Any] | None) -> None:
        values = final_values(scores, diagnostics)
        for t in self.trackers:
            t.log_final(values)

    def close(self, failed: bool = False) -> None:
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            t.close(failed=failed)


__all__ = [
    "LOGGERS",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "TrackerError",
    "Trackers",
    "WandbTracker",
    "check_available",
    "default_mlflow_uri",
    "final_values",
    "scalars",
]
