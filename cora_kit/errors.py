"""Exceptions. Every ``CoraKitError`` is a user error: the CLI prints its message on
one line and exits with code 2, without a traceback."""

from __future__ import annotations


class CoraKitError(Exception):
    """Base class of errors caused by user input (names, files, values)."""


class UnknownPluginError(CoraKitError, LookupError):
    """No plugin of that kind has that name."""


class PluginConflictError(CoraKitError):
    """Two distributions registered one name; ``dist:name`` selects one."""


class PluginParamsError(CoraKitError, ValueError):
    """Parameters given to a plugin do not validate against its params model."""


class ConfigError(CoraKitError, ValueError):
    """A configuration file or override is invalid."""


class DataError(CoraKitError, ValueError):
    """A data file or row is invalid (the message names file, row and reason)."""


class BackendUnavailableError(CoraKitError, RuntimeError):
    """A requested compute backend (e.g. mamba-ssm CUDA) cannot run here."""


class MissingWeightsError(CoraKitError, FileNotFoundError):
    """Pretrained weights are not on disk; the message says where we looked."""


class CheckpointError(CoraKitError, RuntimeError):
    """A checkpoint is missing, truncated or does not match the model."""


class StorageError(CoraKitError):
    """Writing failed for a reason outside cora-kit (disk full, permission denied,
    read-only file system); the message names the path. Nothing already written is lost."""

    def __init__(self, message: str, errno: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.path = errno, path


class RunLockedError(CoraKitError):
    """Another process holds the run folder's lock; the message names it (pid, host)."""
