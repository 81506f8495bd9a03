"""Reading equirectangular (ERP) image files: validation and decoding in one place.

``read_erp(path, size=None, dtype=torch.float32)`` -> ``[3,H,W]``:

* the file must be an image PIL can read; grey and palette images become RGB, alpha is
  dropped; other band layouts (CMYK, ...) are a ``DataError`` naming the file;
* the image must be 2:1 (``W == 2 H``), else a ``DataError`` naming the file and its size;
* ``size=(H, W)`` resizes (bilinear) after the check;
* ``dtype=torch.uint8``: the raw 0-255 values **as decoded, in HWC memory** (a
  channels-last view ``torch.from_numpy(hwc).permute(2, 0, 1)``, no copy): the built-in
  tilers sample that layout directly with OpenCV (``cora_kit_builtins.tilers``); call
  ``.contiguous()`` for CHW memory. Float dtypes: contiguous CHW, the uint8 values / 255.

Decoding runs in numpy/PIL (no torch ops), so DataLoader workers do not start torch's
intra-op thread pool.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cora_kit.errors import DataError

#: PIL modes accepted (converted to RGB): grey, RGB, with alpha or a palette, 16/32-bit grey
IMAGE_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "I", "I;16", "F"})


def read_erp_hwc(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode and validate an ERP file -> uint8 ``[H, W, 3]`` (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as img:
            w, h = img.size
            if img.mode not in IMAGE_MODES:
                raise DataError(
                    f"{p}: {w}x{h} image has {len(img.getbands())} channels (mode {img.mode}); "
                    "expected grey or RGB, optionally with alpha"
                )
            if w != 2 * h:
                raise DataError(f"{p}: {w}x{h} is not an equirectangular panorama (width must be 2 x height)")
            rgb = img.convert("RGB")
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)  # writable (torch.from_numpy warns on read-only)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from exc


def read_erp(
    path: str | Path, size: tuple[int, int] | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """ERP file -> ``[3,H,W]``: float in [0,1] (contiguous CHW) or uint8 (HWC memory)."""
    hwc = read_erp_hwc(path, size)
    if dtype == torch.uint8:
        return torch.from_numpy(hwc).permute(2, 0, 1)
    if not dtype.is_floating_point:
        raise ValueError(f"read_erp returns uint8 or a float dtype; got {dtype}")
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1), dtype=np.float32)
    chw *= np.float32(1.0 / 255.0)
    return torch.from_numpy(chw).to(dtype)


__all__ = ["IMAGE_MODES", "read_erp", "read_erp_hwc"]
