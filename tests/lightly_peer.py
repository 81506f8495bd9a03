"""Load lightly's reference losses without running ``lightly/__init__``.

lightly is a test-only peer (``pip install --no-deps lightly==1.6.0``): its package
``__init__`` imports torchvision, which this project must not install (it would pull a
CUDA torch). The loss modules themselves need only torch, so they are imported from the
installed files under stub parent packages, and the stubs are removed afterwards.
``lightly.models.utils`` (imports torchvision) is replaced by an empty module: NTXentLoss
uses it only to gather a memory bank across GPUs, which these peers never enable.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

_STUB_PACKAGES = ("lightly", "lightly.loss", "lightly.utils", "lightly.models", "lightly.models.modules")


def lightly_root() -> Path | None:
    """Directory of the installed lightly package (without importing it), or None."""
    spec = importlib.util.find_spec("lightly")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def load_lightly_losses() -> SimpleNamespace:
    """``SimpleNamespace(VICRegLoss, NTXentLoss, BarlowTwinsLoss, version)`` from lightly's files.

    Raises ModuleNotFoundError when lightly is not installed.
    """
    root = lightly_root()
    if root is None:
        raise ModuleNotFoundError(
            "lightly is not installed (test peer): pip install --no-deps lightly==1.6.0"
        )
    saved = {k: v for k, v in sys.modules.items() if k == "lightly" or k.startswith("lightly.")}
    try:
        for k in saved:
            del sys.modules[k]
        for name in _STUB_PACKAGES:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = pkg
        sys.modules["lightly.models.utils"] = types.ModuleType("lightly.models.utils")
        vicreg = importlib.import_module("lightly.loss.vicreg_loss")
        ntxent = importlib.import_module("lightly.loss.ntx_ent_loss")
        barlow = importlib.import_module("lightly.loss.barlow_twins_loss")
    finally:
        for k in [k for k in sys.modules if k == "lightly" or k.startswith("lightly.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    from importlib.metadata import version

    return SimpleNamespace(
        VICRegLoss=vicreg.VICRegLoss,
        NTXentLoss=ntxent.NTXentLoss,
        BarlowTwinsLoss=barlow.BarlowTwinsLoss,
        version=version("lightly"),
    )
