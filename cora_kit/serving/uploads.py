"""Uploaded panoramas -> ERP tensors, or an HTTP status and a one-line reason.

The bytes go through the one ERP reader (``cora_kit.data.images``: header check, colour
mode, 2:1, decoding) from memory; this module adds what only a server needs: the upload
size limit, the pixel limit checked on the header before any pixels are decoded
(decompression bombs), and the mapping of each problem to a status code:

| problem                                   | status |
|-------------------------------------------|--------|
| larger than ``max_bytes``                 | 413    |
| not an image / unsupported colour mode    | 415    |
| not 2:1 (the size is named)               | 422    |
| more than ``max_pixels`` pixels           | 413    |
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import torch

from cora_kit.data.images import ErpError, check_erp, read_erp

#: default pixel limit: 2 x 8192 x 4096 (a 16K x 8K panorama is 2x over it; decoded as float
#: it would take 1.6 GB)
DEFAULT_MAX_PIXELS = 2 * 8192 * 4096


_BUFFER_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


#: status of each ``ErpError.problem`` (others: 415); the reader's own pixel limit
#: (``cora_kit.data.images.max_pixels``) is a 413 like the server's
_STATUS = {"image not 2:1": 422, "image too large": 413}


class UploadRejected(Exception):
    """An upload the server refuses: ``status`` (4xx) and a one-line ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        detail = " ".join(_BUFFER_REPR.sub("", detail).split())
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_pixels: int = DEFAULT_MAX_PIXELS


def _named(data: bytes, name: str) -> io.BytesIO:
    buf = io.BytesIO(data)
    buf.name = name  # the reader names the source in its messages
    return buf


def check_upload(data: bytes, name: str, limits: UploadLimits) -> tuple[int, int]:
    """Header-only checks of an upload (nothing decoded) -> (width, height), else ``UploadRejected``."""
    from PIL import Image

    if len(data) > limits.max_bytes:
        raise UploadRejected(413, f"{name}: {len(data) / 2**20:.1f} MB is over the upload limit of"
                                  f" {limits.max_bytes / 2**20:g} MB")
    if not data:
        raise UploadRejected(415, f"{name}: empty file, not an image")
    try:
        header = check_erp(_named(data, name))
    except Image.DecompressionBombError as exc:  # PIL refuses to even open it
        raise UploadRejected(413, f"{name}: too many pixels ({exc})") from None
    except ErpError as exc:
        raise UploadRejected(_STATUS.get(exc.problem, 415), str(exc)) from None
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise UploadRejected(413, f"{name}: {header.width}x{header.height} is {pixels:,} pixels, over the limit"
                                  f" of {limits.max_pixels:,}")
    return header.width, header.height


def decode_upload(data: bytes, name: str, limits: UploadLimits) -> torch.Tensor:
    """Checked upload -> uint8 ``[3,H,W]`` (``read_erp``; 4x smaller than float while queued)."""
    from PIL import Image

    check_upload(data, name, limits)
    try:
        return read_erp(_named(data, name), dtype=torch.uint8)
    except Image.DecompressionBombError as exc:
        raise UploadRejected(413, f"{name}: too many pixels ({exc})") from None
    except ErpError as exc:  # a header that passed but pixels that do not decode (truncated file)
        raise UploadRejected(_STATUS.get(exc.problem, 415), str(exc)) from None


__all__ = ["DEFAULT_MAX_PIXELS", "UploadLimits", "UploadRejected", "check_upload", "decode_upload"]
