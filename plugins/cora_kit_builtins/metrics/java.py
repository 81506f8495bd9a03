"""Guarded Java subprocesses for the Java-based caption metrics.

pycocoevalcap starts ``java`` without timeouts; its ``Meteor`` class keeps a lock held
when the jar answers an error line and then deadlocks in ``__del__`` (the CORA paper's
22-hour hang). Everything here runs ``java`` in its own process group with a deadline
and kills the whole group on timeout or error, then reaps it (no zombies).

On Linux the java process is also bound to the life of the thread that started it
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``): a cora-kit killed by any signal, ``kill -9``
included, takes its java with it instead of leaving an orphan JVM.

``CORA_KIT_JAVA`` overrides the ``java`` executable (default: ``java`` on ``PATH``).
"""

from __future__ import annotations

import collections
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_TIMEOUT_S = 600.0


class JavaError(RuntimeError):
    """A Java metric process failed (bad answer, non-zero exit)."""


class JavaTimeoutError(JavaError):
    """A Java metric process ran past its deadline and was killed."""


def find_java(java: str | None = None) -> str | None:
    """Absolute path of the java executable, or None when absent."""
    candidate = java or os.environ.get("CORA_KIT_JAVA") or "java"
    if os.sep in candidate:
        return candidate if os.access(candidate, os.X_OK) else None
    return shutil.which(candidate)


def java_unavailable_reason(java: str | None = None) -> str | None:
    """None when java can run, otherwise an ``"unavailable: ..."`` reason."""
    if find_java(java) is None:
        which = java or os.environ.get("CORA_KIT_JAVA") or "java"
        return (
            f"unavailable: java executable '{which}' not found (install a Java runtime 8+,"
            " e.g. 'apt-get install default-jre-headless', or set CORA_KIT_JAVA)"
        )
    return None


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when its parent (the thread
    that forks it) dies; None where ``prctl`` is unavailable (not Linux). Everything is
    resolved before the fork: the child only makes two system calls."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl ran
            os._exit(1)

    return preexec


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    proc.wait()


def run_java(
    args: Sequence[str],
    *,
    cwd: str | Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    java: str | None = None,
    what: str = "java",
) -> str:
    """Run ``java ARGS`` to completion; return its stdout (UTF-8).

    Raises ``JavaTimeoutError`` after killing the process group when it runs past
    ``timeout_s``; ``JavaError`` with the tail of stderr on a non-zero exit.
    """
    exe = find_java(java)
    if exe is None:
        raise JavaError(java_unavailable_reason(java) or "java not found")
    proc = subprocess.Popen(
        [exe, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise JavaTimeoutError(
            f"{what}: java ran past the {timeout_s:g} s timeout and was killed"
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise JavaError(f"{what}: java exited with code {proc.returncode}: {' | '.join(tail)}")
    return out.decode("utf-8", "replace")


class JavaLineProcess:
    """A long-running line-protocol java process (METEOR's ``-stdio`` mode).

    Lines are read on a background thread so every ``readline`` has a deadline;
    ``close()`` (also on ``__exit__`` and on any error) kills the process group.
    The deadline is global: ``timeout_s`` counts from ``start()``.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        java: str | None = None,
        what: str = "java",
    ) -> None:
        self.args = list(args)
        self.cwd = cwd
        self.timeout_s = timeout_s
        self.java = java
        self.what = what
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._deadline = 0.0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> JavaLineProcess:
        exe = find_java(self.java)
        if exe is None:
            raise JavaError(java_unavailable_reason(self.java) or "java not found")
        self._proc = subprocess.Popen(
            [exe, *self.args],
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        self._deadline = time.monotonic() + self.timeout_s
        proc = self._proc
        threading.Thread(target=self._pump_stdout, args=(proc,), daemon=True).start()
        threading.Thread(target=self._pump_stderr, args=(proc,), daemon=True).start()
        return self

    def _pump_stdout(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _pump_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                self._stderr.append(line.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    def write_lines(self, lines: Sequence[str]) -> None:
        """Send lines (each must be free of newlines) on a writer thread."""
        if self._proc is None or self._proc.stdin is None:
            raise JavaError(f"{self.what}: process not started")
        payload = "".join(f"{line}\n" for line in lines).encode("utf-8")
        stdin = self._proc.stdin

        def _write() -> None:
            try:
                stdin.write(payload)
                stdin.flush()
            except (OSError, ValueError):
                pass  # the reader reports the failure (EOF or timeout)

        threading.Thread(target=_write, daemon=True).start()

    def readline(self) -> str:
        """Next stdout line (stripped); raises on timeout or when the process ended."""
        remaining = self._deadline - time.monotonic()
        try:
            line = self._lines.get(timeout=max(remaining, 0.0))
        except queue.Empty:
            self.close()
            raise JavaTimeoutError(
                f"{self.what}: no answer within the {self.timeout_s:g} s timeout;"
                " the java process group was killed"
            ) from None
        if line is None:
            code = self._proc.wait() if self._proc is not None else None
            self.close()
            raise JavaError(
                f"{self.what}: java ended early (exit code {code}): "
                + (" | ".join(list(self._stderr)[-5:]) or "no stderr")
            )
        return line.decode("utf-8", "replace").strip()

    def close(self) -> None:
        """Kill the process group and reap it (safe to call twice)."""
        if self._proc is not None:
            _kill_group(self._proc)

    def __enter__(self) -> JavaLineProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # never blocks: no lock, just a kill
        try:
            self.close()
        except Exception:
            pass
