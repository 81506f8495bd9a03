"""One writer per run folder: ``runs/<name>/run.lock``.

    with RunLock(run_dir):     # RunLockedError at once if another process holds it
        ...train...

The lock is an exclusive ``flock`` on ``run.lock``, whose content names the holder
(pid, host, start time, command line). The kernel drops a ``flock`` when its process
dies, however it dies (kill -9 included), so a lock left by a dead run is stale by
construction: the next run takes it over and says whose it was. On file systems without
``flock`` (some cluster file systems) the lock falls back to the file alone: a lock of a
process that no longer runs on this host is stale; one held on another host is reported
with how to remove it if that run is gone.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cora_kit.errors import RunLockedError
from cora_kit.fs import storage_error

LOCK_NAME = "run.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _proc_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process named by ``holder`` still runs (only decidable on this host)."""
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = holder.get("proc_start")
    return start is None or _proc_start(pid) in (None, start)


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host h, started 2026-01-01 12:00:00, `cora-kit run ...```."""
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("started"):
        text += f", started {holder['started']}"
    if holder.get("command"):
        text += f", `{holder['command']}`"
    return text


class RunLock:
    """Exclusive lock of one run folder (see the module docstring).

    ``acquire()`` raises ``RunLockedError`` naming the holder; ``stale`` is the holder
    record of a dead run whose lock was taken over (None otherwise)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None
        self._flock = True

    def _record(self) -> bytes:
        me = {
            "pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
        }
        return (json.dumps(me) + "\n").encode()

    def _read(self, fd: int | None = None) -> dict[str, Any]:
        try:
            if fd is not None:
                os.lseek(fd, 0, os.SEEK_SET)
                raw = os.read(fd, 1 << 16)
            else:
                raw = self.path.read_bytes()
            data = json.loads(raw.decode("utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _locked(self, holder: dict[str, Any]) -> RunLockedError:
        return RunLockedError(
            f"{self.path.parent}: another cora-kit run is writing this folder ({describe(holder)});"
            f" wait for it to finish, or choose another --name (lock file: {self.path})"
        )

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, self.path.parent, "creating the run folder") from None
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise storage_error(exc, self.path, "creating the run lock") from None
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise self._locked(holder) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _NO_FLOCK:
                    raise storage_error(exc, self.path, "locking the run folder") from None
                self._flock = False
                return self._acquire_without_flock()
            # the file may have been unlinked by the previous holder between open and flock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = self._read(fd)
            if previous.get("pid"):
                self.stale = previous  # a run that died holding it (kill -9, power loss)
            self._write(fd)
            self._fd = fd
            return self
        raise RunLockedError(f"{self.path}: could not take the run lock (it keeps changing hands)")

    def _write(self, fd: int) -> None:
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, self._record())
        except OSError as exc:
            os.close(fd)
            raise storage_error(exc, self.path, "writing the run lock") from None

    def _acquire_without_flock(self) -> RunLock:
        """No ``flock`` here: the lock file is created whole (a temp file hard-linked to its
        name, which fails if it exists); a dead holder on this host is stale."""
        warnings.warn(f"{self.path}: the file system has no flock; using the lock file alone", RuntimeWarning,
                      stacklevel=3)
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(self._record())
        except OSError as exc:
            raise storage_error(exc, self.path, "creating the run lock") from None
        try:
            for _ in range(20):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    holder = self._read()
                    if holder and (holder.get("host") != socket.gethostname() or _alive(holder)):
                        raise self._locked(holder) from None
                    if holder:  # a dead run's lock (an empty file is a flock probe's leftover)
                        self.stale = holder
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                except OSError as exc:
                    raise storage_error(exc, self.path, "creating the run lock") from None
                self._fd = os.open(self.path, os.O_RDONLY)
                return self
        finally:
            tmp.unlink(missing_ok=True)
        raise RunLockedError(f"{self.path}: could not take the run lock (it keeps changing hands)")

    def release(self) -> None:
        """Remove the lock file, then drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


F = TypeVar("F", bound=Callable[..., Any])


def one_writer(fn: F) -> F:
    """Decorate ``fn(config, out_dir, ...)`` so it runs holding ``out_dir``'s ``RunLock``
    (on the writing process only: rank 0 under torchrun). A taken-over stale lock is
    reported on stderr."""

    @functools.wraps(fn)
    def wrapper(config: Any, out_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:
            return fn(config, out_dir, *args, **kwargs)
        folder = Path(out_dir)
        created = not folder.exists()
        try:
            with RunLock(folder) as lock:
                if lock.stale is not None:
                    print(f"note: {lock.path}: took over the lock of a run that ended without releasing it"
                          f" ({describe(lock.stale)})", file=sys.stderr)
                return fn(config, out_dir, *args, **kwargs)
        finally:
            if created:  # a run that failed before writing anything leaves no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()

    return wrapper  # type: ignore[return-value]


__all__ = ["LOCK_NAME", "RunLock", "describe", "one_writer"]
