"""File-system primitives every writer of cora-kit shares.

* ``atomic_write_bytes(path, data)`` / ``atomic_write(path, write)``: a temp file beside
  ``path``, fsync, rename, fsync of the folder: a crash, a kill or a full disk never
  leaves half a file under a real name, and the file that was there stays intact.
* ``atomic_dir(path)``: the same for a whole folder (written under a temp name, renamed).
* ``append_line(path, text)``: one ``write`` with ``O_APPEND``; a short write (disk full)
  is cut back, so the file only ever grows by whole lines.
* ``read_lines_tolerant(path)``: lines of a file some process may have been killed while
  appending to: a torn last line (no newline) is dropped with a warning.
* ``sha256_file`` / ``sha256_bytes``.
* ``StorageError``: disk full, permission denied, read-only file system as one line naming
  the path (``storage_error`` turns an ``OSError`` into one).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from cora_kit.errors import CoraKitError, StorageError

_BLOCK = 1 << 20
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large for the file system",
}


#: errno values that are the machine's business, not a bug: reported as ``StorageError``
STORAGE_ERRNOS = frozenset(_REASONS)


def storage_error(exc: OSError, path: str | Path | None, doing: str | None = "writing") -> StorageError:
    """One-line ``StorageError`` for an ``OSError`` met while ``doing`` something to
    ``path`` (``doing`` None: the error is reported without claims about what was kept)."""
    reason = _REASONS.get(exc.errno or -1) or (exc.strerror or str(exc))
    where = path if path is not None else (exc.filename or "(path unknown)")
    if doing is None:
        return StorageError(f"{reason}: {where}", exc.errno, str(where))
    return StorageError(f"{reason}: {where} (while {doing}; nothing already written was changed)", exc.errno,
                        str(where))


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (ignored where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until all of ``data`` is written (blocks of 1 MiB); a write that makes
    no progress is ENOSPC."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:_BLOCK])
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _mkstemp(path: Path) -> tuple[int, Path]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise storage_error(exc, path) from None
    return fd, Path(name)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> str:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename); returns its sha256.

    Any ``OSError`` (disk full, permission denied, read-only) is a ``StorageError`` naming
    ``path``; the temp file is removed and a file already at ``path`` is untouched."""
    path = Path(path)
    fd, tmp = _mkstemp(path)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return sha256_bytes(data)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync, then rename onto ``path``.

    For writers that need a file name (third-party serialisers). Their own errors pass
    through unchanged, except that a failure while the folder's file system has no free
    space left is reported as the ``StorageError`` "no space left on device: <path>"."""
    path = Path(path)
    fd, tmp = _mkstemp(path)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(exc, path) from None
    except Exception as exc:
        full = not isinstance(exc, CoraKitError) and _disk_full(path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_file(path: str | Path, data: bytes | memoryview) -> str:
    """Write ``data`` to a new file (inside an ``atomic_dir``); returns its sha256.
    ``OSError`` -> ``StorageError`` naming ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error(exc, path) from None
    return sha256_bytes(data)


def _disk_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _BLOCK


def write_text_atomic(path: str | Path, text: str) -> str:
    """``atomic_write_bytes`` of UTF-8 ``text``; returns its sha256."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """``with atomic_dir(final) as tmp:`` fill ``tmp``; on success it is fsynced and renamed
    to ``final`` (a folder already there is replaced), on any error it is removed.

    The temp folder is ``.<name>.tmp-<random>`` beside ``final``: readers skip names
    starting with a dot, so they see the whole folder or none of it."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as exc:
        raise storage_error(exc, final) from None
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(exc, final) from None
    except StorageError as exc:  # name the file where it was going to be, not the temp folder
        shutil.rmtree(tmp, ignore_errors=True)
        inside = exc.path is not None and Path(exc.path).is_relative_to(tmp)
        if not inside or exc.errno is None:
            raise
        target = final / Path(exc.path).relative_to(tmp)  # type: ignore[arg-type]
        raise storage_error(OSError(exc.errno, os.strerror(exc.errno)), target) from None
    except Exception as exc:  # a serialiser's own error type: was the disk full?
        full = not isinstance(exc, CoraKitError) and _disk_full(final.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), final) from exc
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def append_line(path: str | Path, text: str) -> None:
    """Append ``text`` + newline to ``path`` as one ``write`` (``O_APPEND``).

    A kill cannot split one ``write`` of a regular file; a short write (disk full) is
    truncated back to the old length and raised as a ``StorageError``."""
    path = Path(path)
    data = (text.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise storage_error(exc, path, "appending") from None
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, data)  # one write() for any line under 1 MiB
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise storage_error(exc, path, "appending") from None
    finally:
        os.close(fd)


def read_lines_tolerant(path: str | Path) -> list[str]:
    """Lines of an append-only text file (newlines removed, blank lines skipped).

    A last line without its newline is what a kill in the middle of an append leaves:
    it is dropped with a ``RuntimeWarning`` naming the file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    if torn.strip():
        warnings.warn(
            f"{path}: dropped an incomplete last line ({len(torn)} characters; a run was killed while writing it)",
            RuntimeWarning, stacklevel=2,
        )
    return [line for line in lines if line.strip()]


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


__all__ = [
    "STORAGE_ERRNOS",
    "StorageError",
    "append_line",
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "read_lines_tolerant",
    "sha256_bytes",
    "sha256_file",
    "storage_error",
    "write_file",
    "write_text_atomic",
]
