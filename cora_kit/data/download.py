"""One image download for ``cora-kit data fetch``: resumable, retried, checked.

``Downloader(client, images, options, stop)(url)`` writes ``url`` to
``images/.<sha256 of url>.part`` and renames it to ``images/<sha256>.<format>`` only once it
is complete and checked (``check_panorama_file``: it decodes to the end and is a 2:1
panorama by ``cora_kit.data.images.check_erp``). A ``.part`` left by an interrupted run is
continued with an HTTP range request (restarted whole if the server ignores the range or the
result does not decode). 5xx answers, connection errors, timeouts and bodies cut short are
``TransientError``s, retried with exponential backoff; a 4xx, a body that is not an image
and a non-2:1 image are ``PermanentError``s, never retried, and leave no file.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cora_kit.data.images import ErpError, check_erp

_BACKOFF_CAP_S = 30.0
_FORMAT_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
USER_AGENT = "cora-kit-fetch (+https://github.com/cora-kit)"


@dataclass(frozen=True)
class FetchOptions:
    """``workers`` parallel downloads; ``retries`` extra attempts after a transient failure,
    waiting ``backoff * 2**k`` seconds (+ jitter, capped at 30 s; a 503's Retry-After is
    honoured within the cap); ``timeout`` seconds for connect/read/write/pool each."""

    workers: int = 8
    retries: int = 3
    timeout: float = 30.0
    backoff: float = 1.0


class TransientError(Exception):
    """Worth another attempt (5xx, network, timeout, body cut short)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Not worth another attempt (4xx, not an image, not 2:1, ...)."""



def url_file_stem(url: str) -> str:
    """The file name (without extension) of ``url``'s image: its SHA-256 in hex."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def find_complete(images: Path, stem: str) -> Path | None:
    """An already complete image of ``stem`` (from an earlier run), if one is there."""
    for p in images.glob(f"{stem}.*"):
        if p.is_file() and not p.name.endswith(".part"):
            return p
    return None


def check_panorama_file(path: Path) -> str:
    """Check ``path`` is a panorama the loaders accept (``cora_kit.data.images.check_erp``:
    readable, grey/RGB, 2:1 within ``ASPECT_TOLERANCE``) and that it decodes to the end;
    returns the file extension of its format. Raises ``PermanentError`` with the reason otherwise."""
    try:
        check_erp(path)
    except ErpError as err:
        if err.problem == "unreadable image":
            raise PermanentError(f"not an image ({_sniff(path)}; {err})") from None
        raise PermanentError(str(err)) from None
    try:
        with Image.open(path) as img:
            fmt = img.format or ""
            img.load()  # a body cut short decodes only part-way
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PermanentError(f"not a decodable image ({_sniff(path)}; {type(exc).__name__}: {exc})") from None
    return _FORMAT_EXT.get(fmt, f".{fmt.lower() or 'img'}")


def _sniff(path: Path) -> str:
    """A short description of what a non-image body starts with."""
    with path.open("rb") as f:
        head = f.read(64)
    if head.lstrip()[:1] == b"<":
        return "body looks like HTML/XML"
    return f"{path.stat().st_size} bytes"


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Downloader:
    """Downloads one URL into ``images/`` (resume, retries, checks); thread-safe."""

    def __init__(self, client, images: Path, options: FetchOptions, stop: threading.Event,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.client, self.images, self.options, self.stop = client, images, options, stop
        self.on_bytes = on_bytes or (lambda n: None)

    def __call__(self, url: str) -> tuple[Path, int]:
        """-> (final path, bytes downloaded). Raises PermanentError/TransientError (after retries)."""
        stem = url_file_stem(url)
        part = self.images / f".{stem}.part"
        attempt, total = 0, 0
        while True:
            try:
                resumed, n, ctype = self._get(url, part)
                total += n
                try:
                    ext = check_panorama_file(part)
                except PermanentError as exc:
                    if not resumed:
                        raise PermanentError(f"{exc} [Content-Type: {ctype}]") from None
                    # a stale partial from another version of the file: once more, whole
                    part.unlink(missing_ok=True)
                    _, n, ctype = self._get(url, part)
                    total += n
                    ext = check_panorama_file(part)
                final = self.images / f"{stem}{ext}"
                os.replace(part, final)
                return final, total
            except PermanentError:
                part.unlink(missing_ok=True)
                raise
            except TransientError as exc:
                if attempt >= self.options.retries or self.stop.is_set():
                    raise TransientError(f"{exc} (after {attempt + 1} attempt{'s' if attempt else ''})") from None
                wait = min(self.options.backoff * 2**attempt, _BACKOFF_CAP_S)
                wait = wait * (1.0 + 0.25 * random.random())
                if exc.retry_after is not None:
                    wait = min(max(wait, exc.retry_after), _BACKOFF_CAP_S)
                attempt += 1
                if self.stop.wait(wait):
                    raise TransientError(f"{exc} (interrupted)") from None

    def _get(self, url: str, part: Path) -> tuple[bool, int, str]:
        """One GET into ``part`` (continuing it with a range request when it exists);
        -> (continued an earlier partial, bytes received, Content-Type)."""
        import httpx

        start = part.stat().st_size if part.is_file() else 0
        headers = {"Range": f"bytes={start}-"} if start else {}
        try:
            with self.client.stream("GET", url, headers=headers) as r:
                code = r.status_code
                if code == 416 and start:  # the partial is not a prefix of this file any more
                    part.unlink(missing_ok=True)
                    raise TransientError("HTTP 416 on a range request; restarting the download")
                if code >= 500:
                    raise TransientError(f"HTTP {code} {r.reason_phrase}", _retry_after(r.headers.get("retry-after")))
                if code >= 400:
                    raise PermanentError(f"HTTP {code} {r.reason_phrase} (a 4xx is not retried)")
                if code not in (200, 206):
                    raise PermanentError(f"HTTP {code} {r.reason_phrase}: expected 200")
                resumed = code == 206 and start > 0
                received = 0
                with part.open("ab" if resumed else "wb") as f:
                    for chunk in r.iter_bytes():  # as received: a cut body keeps what came
                        if self.stop.is_set():
                            raise TransientError("interrupted")
                        f.write(chunk)
                        received += len(chunk)
                        self.on_bytes(len(chunk))
                return resumed, received, r.headers.get("content-type", "none")
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out ({type(exc).__name__}, --timeout {self.options.timeout:g} s)") from None
        except httpx.RemoteProtocolError as exc:
            raise TransientError(f"connection closed early: body cut short ({exc})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"connection error ({type(exc).__name__}: {exc})") from None


__all__ = ["Downloader", "FetchOptions", "PermanentError", "TransientError", "check_panorama_file", "find_complete",
           "url_file_stem"]
