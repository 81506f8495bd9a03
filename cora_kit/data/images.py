"""The one reader of equirectangular (ERP) image files: header check, validation, decoding.

Every part of cora-kit that opens a panorama file goes through here: the dataset loaders
(``check_erp`` on each row's image, ``confine`` on its path), training and evaluation
(``read_erp``), ``cora-kit tile``, the tilers' file input (``cora_kit.geometry.load_erp``)
and serving (caption, export, and uploads: every function here also takes an open binary
file such as ``io.BytesIO``). The rules, the same everywhere:

* the file must be an image PIL can identify (else ``DataError`` naming it);
* size: at most ``max_pixels()`` pixels (``MAX_PIXELS``, 16384 x 8192, or
  ``$CORA_KIT_MAX_IMAGE_PIXELS``), checked from the header before anything is decoded: a
  small file that would decompress to gigabytes (a "decompression bomb") is a
  ``DataError`` naming it, never a traceback;
* colour mode: grey or RGB, optionally with alpha or a palette (alpha is dropped, grey and
  palette become RGB); 16-bit grey is scaled to 8 bits (65535 -> 255), not clipped; CMYK
  (JPEG) is converted through its embedded ICC profile when it has one, else with PIL's
  CMYK formula; other band layouts (YCbCr, LAB, ...) are a ``DataError``;
* shape: width / height within ``ASPECT_TOLERANCE`` of 2 (equirectangular). A file within
  tolerance but not exactly 2:1 is resampled (bilinear) to ``2H x H`` when decoded, so the
  tilers always get an exact 2:1 array; ``size=(H, W)`` resizes to that instead.
* a dataset's image paths stay inside its folder (``confine``): ``../../etc/passwd`` in a
  CSV is refused, not opened.

``read_erp`` returns float ``[3,H,W]`` in [0,1], contiguous; the float values are exactly
the uint8 values / 255, computed in numpy so that DataLoader workers do not start torch's
intra-op thread pool. ``dtype=torch.uint8``: the raw 0-255 values **as decoded, in HWC
memory** (a channels-last view ``torch.from_numpy(hwc).permute(2, 0, 1)``, no copy): the
built-in tilers sample that layout directly with OpenCV, and converting a whole panorama
to CHW costs more than tiling it; call ``.contiguous()`` for CHW memory.
``read_erp_hwc`` returns the decoded uint8 ``[H,W,3]`` array itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from cora_kit.errors import DataError

#: file suffixes treated as panoramas when a folder is given
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: relative tolerance on the 2:1 aspect ratio (|W/H - 2| <= 2 * tolerance)
ASPECT_TOLERANCE = 0.01
#: largest image decoded, in pixels (a 16K panorama); ``$CORA_KIT_MAX_IMAGE_PIXELS`` overrides
MAX_PIXELS = 16384 * 8192
#: 16-bit grey modes (scaled to 8 bits)
MODES_16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: PIL modes accepted (converted to RGB): grey, RGB, with alpha or a palette, 16/32-bit grey, CMYK
IMAGE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "F", "CMYK"} | MODES_16)

#: a file path, or an open binary file (e.g. ``io.BytesIO`` of an upload; its ``name``
#: attribute, if any, names it in messages)
ErpSource = str | Path | BinaryIO


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

    PROBLEMS = ("unreadable image", "unsupported colour mode", "image not 2:1", "image too large",
                "path outside the dataset folder")

    def __init__(self, problem: str, message: str) -> None:
        super().__init__(message)
        self.problem = problem


def max_pixels() -> int:
    """The pixel limit: ``$CORA_KIT_MAX_IMAGE_PIXELS`` when set, else ``MAX_PIXELS``."""
    raw = os.environ.get("CORA_KIT_MAX_IMAGE_PIXELS")
    if raw is None:
        return MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"CORA_KIT_MAX_IMAGE_PIXELS must be a whole number of pixels; got {raw!r}") from None
    if value < 1:
        raise DataError(f"CORA_KIT_MAX_IMAGE_PIXELS must be >= 1; got {value}")
    return value


def _source(path: ErpSource) -> tuple[Path | BinaryIO, Path]:
    """(what PIL opens, the name messages use)."""
    if isinstance(path, (str, Path)):
        return Path(path), Path(path)
    return path, Path(str(getattr(path, "name", "<upload>")))


def _unreadable(path: Path, exc: BaseException) -> ErpError:
    return ErpError("unreadable image", f"{path}: cannot read image ({type(exc).__name__}: {exc})")


def _too_large(path: Path, pixels: int, limit: int, size: tuple[int, int] | None = None) -> ErpError:
    what = f"{size[0]}x{size[1]} is " if size else ""
    return ErpError(
        "image too large",
        f"{path}: {what}{pixels / 1e6:.0f} megapixels, over the limit of {limit / 1e6:.0f} megapixels"
        " (a decompression bomb? a larger limit: CORA_KIT_MAX_IMAGE_PIXELS)",
    )


@contextlib.contextmanager
def _open(path: ErpSource) -> Iterator[tuple[Any, Path]]:
    """``(PIL image, name)``, opened lazily (header only) and size-checked; PIL's own
    decompression-bomb checks give way to ``max_pixels()``. Errors are ``ErpError``s."""
    from PIL import Image, UnidentifiedImageError

    src, p = _source(path)
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(src)
    except Image.DecompressionBombError as exc:  # over PIL's own (larger) limit: its message has the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(p, int(found.group(1)) if found else limit + 1, limit) from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise _unreadable(p, exc) from None
    with img:
        w, h = img.size
        if w * h > limit:
            raise _too_large(p, w * h, limit, (w, h))
        yield img, p


def _validate(path: Path, width: int, height: int, mode: str) -> ErpHeader:
    if mode not in IMAGE_MODES:
        from PIL import Image

        raise ErpError(
            "unsupported colour mode",
            f"{path}: {width}x{height} image has {Image.getmodebands(mode)} channels (mode {mode});"
            " expected grey, RGB or CMYK, optionally with alpha",
        )
    if height <= 0 or abs(width / height - 2.0) > 2.0 * ASPECT_TOLERANCE:
        raise ErpError(
            "image not 2:1", f"{path}: {width}x{height} is not an equirectangular panorama (width must be 2 x height)"
        )
    return ErpHeader(path, width, height, mode)


def check_erp(path: ErpSource) -> ErpHeader:
    """Header-only check (no pixel decoding): readable, not too large, supported colour
    mode, 2:1. Raises ``ErpError`` (a ``DataError``) naming the file and what is wrong."""
    with _open(path) as (img, p):
        return _validate(p, img.width, img.height, img.mode)


def _scale_to_uint8(arr: np.ndarray, full_scale: int) -> np.ndarray:
    """Integers in [0, full_scale] -> uint8, rounded (65535 -> 255, 32768 -> 128)."""
    wide = arr.astype(np.uint32)
    return ((wide * 255 + full_scale // 2) // full_scale).astype(np.uint8)


def _grey_to_rgb(img: Any, p: Path) -> np.ndarray:
    """16-bit and 32-bit grey / float images -> uint8 ``[H,W,3]`` (scaled, not clipped)."""
    arr = np.asarray(img)
    if img.mode in MODES_16:
        grey = _scale_to_uint8(arr, 65535)
    elif img.mode == "I":  # 32-bit integers: 8- or 16-bit data (TIFF, PNG readers)
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ErpError("unsupported colour mode", f"{p}: 32-bit grey values {lo}..{hi} are outside 0..65535")
        grey = arr.astype(np.uint8) if hi <= 255 else _scale_to_uint8(arr, 65535)
    else:  # "F": floats in [0, 1] or [0, 255]
        finite = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.size and float(finite.max()) <= 1.0 else 1.0
        grey = np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _cmyk_to_rgb(img: Any, p: Path) -> Any:
    """CMYK -> RGB through the embedded ICC profile (to sRGB), else PIL's formula."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img.convert("RGB")
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                         renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise ErpError("unreadable image", f"{p}: its CMYK ICC profile cannot be used ({exc})") from None


def _decode_rgb(img: Any, p: Path) -> Any:
    """A validated PIL image -> an RGB PIL image (or uint8 ``[H,W,3]`` for 16/32-bit grey)."""
    img.load()
    if img.mode in MODES_16 or img.mode in ("I", "F"):
        return _grey_to_rgb(img, p)
    if img.mode == "CMYK":
        return _cmyk_to_rgb(img, p)
    return img if img.mode == "RGB" else img.convert("RGB")  # convert("RGB") of RGB copies


def read_erp_hwc(path: ErpSource, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an ERP file -> uint8 ``[H,W,3]`` (writable). ``size`` (H, W) resizes
    (bilinear); without it a file within the aspect tolerance is resampled to exactly
    ``2H x H``. Bad files are ``DataError``s naming them."""
    from PIL import Image

    try:
        with _open(path) as (img, p):
            _validate(p, img.width, img.height, img.mode)
            rgb = _decode_rgb(img, p)
            if isinstance(rgb, np.ndarray):
                rgb = Image.fromarray(rgb, mode="RGB")
            target = (size[1], size[0]) if size is not None else (2 * img.height, img.height)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)  # writable: torch.from_numpy warns on read-only
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # truncated / corrupt data
        raise _unreadable(_source(path)[1], exc) from None


def read_erp(
    path: ErpSource, size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Decode an ERP file -> ``[3,H,W]``: float in [0,1] (contiguous) or uint8 (HWC memory).

    ``size`` and errors as ``read_erp_hwc``."""
    return erp_tensor(read_erp_hwc(path, size), dtype)


def erp_tensor(hwc: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[H,W,3]`` pixels (writable) -> ``[3,H,W]``: float in [0,1] (exactly
    value / 255, contiguous) or uint8 (a view of ``hwc``); what ``read_erp`` returns for a
    file holding these pixels."""
    if dtype == torch.uint8:
        return torch.from_numpy(hwc).permute(2, 0, 1)
    if not dtype.is_floating_point:
        raise ValueError(f"read_erp returns uint8 or a float dtype; got {dtype}")
    out = np.ascontiguousarray(hwc.transpose(2, 0, 1), dtype=np.float32)
    out *= np.float32(1.0 / 255.0)
    return torch.from_numpy(out).to(dtype)


def confine(path: str | Path, root: str | Path, shown: str | None = None) -> Path:
    """``path`` (absolute, or relative to ``root``) when it lies inside ``root``; else an
    ``ErpError`` ("path outside the dataset folder") naming ``shown`` (default: ``path``).

    The check is on the normalised path (``..`` removed), without following symlinks: a
    dataset may link to images stored elsewhere, a row may not climb out of its folder."""
    base = Path(os.path.abspath(root))
    target = Path(os.path.abspath(base / path))
    if target != base and base not in target.parents:
        raise ErpError(
            "path outside the dataset folder",
            f"image path '{shown if shown is not None else path}' resolves to {target}, outside the dataset"
            f" folder {base}"
            " (set the image root to the folder that holds the images)",
        )
    return target


__all__ = [
    "ASPECT_TOLERANCE", "IMAGE_MODES", "IMAGE_SUFFIXES", "MAX_PIXELS", "ErpError", "ErpHeader", "ErpSource",
    "check_erp", "confine", "erp_tensor", "max_pixels", "read_erp", "read_erp_hwc",
]
