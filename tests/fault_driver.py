"""A real child process for the fault tests: one ``engine.run`` on the FakeCoraModel.

    python tests/fault_driver.py OUT --cache DIR [--resume] [--set key=value ...]
        [--step-sleep S] [--hold-until FILE] [--kill KIND:PATTERN:N[:after]]

``--kill`` makes the process send itself SIGKILL (a real signal, as ``kill -9`` would)
the N-th time it reaches a point whose path contains PATTERN:

* ``write``: an ``os.write`` to such a file: half of the bytes are written, then the kill
  (a torn file or line, as a kill or power loss in the middle of a write leaves);
* ``replace``: an ``os.replace`` / ``os.rename`` onto such a path: the kill comes before
  the rename (``after``: just after it).

Nothing in cora-kit knows about this: the hooks wrap ``os`` functions in this process only.
``--step-sleep`` slows every optimizer step; ``--hold-until FILE`` stops after the first
step until FILE exists (for tests that need a run in progress).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached


def install_kill(spec: str) -> None:
    """Wrap ``os.write`` / ``os.replace`` to SIGKILL this process at the point ``spec``."""
    kind, pattern, count, *rest = spec.split(":")
    after = rest == ["after"]
    left = [int(count)]

    def hit(path: str) -> bool:
        if pattern not in path:
            return False
        left[0] -= 1
        return left[0] == 0

    if kind == "write":
        real_write = os.write

        def write(fd: int, data) -> int:
            try:
                path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                path = ""
            if path and hit(path):
                half = memoryview(data)[: max(len(data) // 2, 1)]
                real_write(fd, half)
                _die()
            return real_write(fd, data)

        os.write = write  # type: ignore[assignment]
    elif kind == "replace":
        for name in ("replace", "rename"):
            real = getattr(os, name)

            def move(src, dst, *a, _real=real, **kw):
                if not hit(str(dst)):
                    return _real(src, dst, *a, **kw)
                if after:
                    _real(src, dst, *a, **kw)
                _die()

            setattr(os, name, move)
    else:
        raise SystemExit(f"unknown kill kind {kind!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--step-sleep", type=float, default=0.0)
    ap.add_argument("--hold-until")
    ap.add_argument("--kill")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from test_train_fake import fake_factory, make_splits, tiny_config

    from cora_kit.errors import CoraKitError
    from cora_kit.train.engine import run

    overrides = dict(s.split("=", 1) for s in args.set)
    config = tiny_config(**overrides)

    def on_step(stage: int, step: int, metrics: dict) -> None:
        if args.step_sleep:
            time.sleep(args.step_sleep)
        while args.hold_until and not Path(args.hold_until).exists():
            time.sleep(0.05)

    if args.kill:
        install_kill(args.kill)
    try:
        run(config, args.out, model_factory=fake_factory, splits=make_splits(), feature_cache_dir=args.cache,
            resume=args.resume, progress=False, on_step=on_step)
    except CoraKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
