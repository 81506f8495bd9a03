"""The one reader of equirectangular (ERP) image files: header check, validation, decoding.

Every part of cora-kit that opens a panorama file goes through here: the dataset loaders
(``check_erp`` on each row's image), training and evaluation (``read_erp``), ``cora-kit
tile``, the tilers' file input (``cora_kit.geometry.load_erp``) and serving (caption,
export, and the server's uploads: any function here also takes an open binary file such as
``io.BytesIO``). The rules, the same everywhere:

* the file must be an image PIL can identify (else ``DataError`` naming it);
* colour mode: grey or RGB, optionally with alpha or a palette (alpha is dropped, grey and
  palette become RGB); other band layouts (CMYK, YCbCr, LAB, ...) are a ``DataError``;
* shape: width / height within ``ASPECT_TOLERANCE`` of 2 (equirectangular). A file within
  tolerance but not exactly 2:1 is resampled (bilinear) to ``2H x H`` when decoded, so the
  tilers always get an exact 2:1 array; ``size=(H, W)`` resizes to that instead.

``read_erp`` returns float ``[3,H,W]`` in [0,1] (``dtype=torch.uint8``: the raw 0-255
values); the float values are exactly the uint8 values / 255, computed in numpy so that
DataLoader workers do not start torch's intra-op thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from cora_kit.errors import DataError

#: file suffixes treated as panoramas when a folder is given
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: relative tolerance on the 2:1 aspect ratio (|W/H - 2| <= 2 * tolerance)
ASPECT_TOLERANCE = 0.01
#: PIL modes accepted (converted to RGB): grey, RGB, with alpha or a palette, 16/32-bit grey
IMAGE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "I;16", "F"})


@dataclass(frozen=True)
class ErpHeader:
    """What ``check_erp`` read from a file header (nothing decoded)."""

    path: Path
    width: int
    height: int
    mode: str


class ErpError(DataError):
    """A panorama file cannot be used; ``problem`` is one of ``PROBLEMS`` (for bad-row
    summaries), the message names the file."""

    PROBLEMS = ("unreadable image", "unsupported colour mode", "image not 2:1")

    def __init__(self, problem: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem


#: a file path, or an open binary file (e.g. ``io.BytesIO`` of an upload; its ``name``
#: attribute, if any, names it in messages)
ErpSource = str | Path | BinaryIO


def _source(path: ErpSource) -> tuple[str | Path | BinaryIO, Path]:
    """(what PIL opens, the name messages use)."""
    if isinstance(path, (str, Path)):
        return Path(path), Path(path)
    return path, Path(str(getattr(path, "name", "<upload>")))


def _unreadable(path: Path, exc: Exception) -> ErpError:
    return ErpError("unreadable image", f"{path}: cannot read image ({type(exc).__name__}: {exc})")


def _validate(path: Path, width: int, height: int, mode: str) -> ErpHeader:
    if mode not in IMAGE_MODES:
        from PIL import Image

        raise ErpError(
            "unsupported colour mode",
            f"{path}: {width}x{height} image has {Image.getmodebands(mode)} channels (mode {mode});"
            " expected grey or RGB, optionally with alpha",
        )
    if height <= 0 or abs(width / height - 2.0) > 2.0 * ASPECT_TOLERANCE:
        raise ErpError(
            "image not 2:1", f"{path}: {width}x{height} is not an equirectangular panorama (width must be 2 x height)"
        )
    return ErpHeader(path, width, height, mode)


def check_erp(path: ErpSource) -> ErpHeader:
    """Header-only check (no pixel decoding): readable, supported colour mode, 2:1.

    Raises ``ErpError`` (a ``DataError``) naming the file, its size and what is wrong."""
    from PIL import Image, UnidentifiedImageError

    src, p = _source(path)
    try:
        with Image.open(src) as img:
            w, h = img.size
            mode = img.mode
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise _unreadable(p, exc) from None
    return _validate(p, w, h, mode)


def read_erp(
    path: ErpSource, size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Decode an ERP file -> ``[3,H,W]``: float in [0,1] (``dtype`` float32) or uint8.

    ``size`` (H, W) resizes (bilinear); without it a file within the aspect tolerance is
    resampled to exactly ``2H x H``. Bad files are ``DataError``s naming them."""
    from PIL import Image, UnidentifiedImageError

    src, p = _source(path)
    try:
        with Image.open(src) as img:
            _validate(p, img.width, img.height, img.mode)
            rgb = img.convert("RGB")
            target = (size[1], size[0]) if size is not None else (2 * img.height, img.height)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.BILINEAR)
            arr = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise _unreadable(p, exc) from None
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
    if dtype == torch.uint8:
        return torch.from_numpy(chw)
    if not dtype.is_floating_point:
        raise ValueError(f"read_erp returns uint8 or a float dtype; got {dtype}")
    out = chw.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return torch.from_numpy(out).to(dtype)


__all__ = [
    "ASPECT_TOLERANCE", "IMAGE_MODES", "IMAGE_SUFFIXES", "ErpError", "ErpHeader", "ErpSource", "check_erp", "read_erp",
]
