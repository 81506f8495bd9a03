"""``python -m cora_kit ...`` and ``torchrun --nproc-per-node N -m cora_kit run ...``."""

from __future__ import annotations

import sys

from cora_kit.cli import main

if __name__ == "__main__":
    sys.exit(main())
