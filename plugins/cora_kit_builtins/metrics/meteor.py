"""METEOR 1.5 (COCO) through pycocoevalcap's ``meteor-1.5.jar``, with a guarded process.

Same protocol and numbers as ``pycocoevalcap.meteor.meteor.Meteor`` (``-stdio -l en
-norm``: one ``SCORE ||| refs ||| hyp`` line per item, then one ``EVAL ||| stats...``
line; the answer is one line per item and the corpus score last), but:

- the jar runs in its own process group under a timeout and is killed and reaped on
  timeout or on any unexpected answer (pycocoevalcap keeps a lock held when the jar
  answers ``Error: ...`` and deadlocks in ``Meteor.__del__``);
- whitespace is normalised and ``|||`` removed from references too, so a caption with
  a newline cannot break the line protocol;
- ``start()`` may be called early: the JVM start and paraphrase-table load (most of
  METEOR's time) then overlap with other work.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cora_kit_builtins.metrics.coco import CocoMetric
from cora_kit_builtins.metrics.java import JavaError, JavaLineProcess
from cora_kit_builtins.metrics.ptb import normalize_whitespace


def meteor_jar() -> Path:
    """Path of pycocoevalcap's ``meteor-1.5.jar``."""
    from pycocoevalcap.meteor import meteor

    return Path(meteor.__file__).parent / meteor.METEOR_JAR


def _clean(text: str) -> str:
    return normalize_whitespace(text.replace("|||", "")).replace("  ", " ")


class Meteor(CocoMetric):
    """METEOR 1.5 (COCO: English, normalised, paraphrase table); java, guarded."""

    key = "meteor"
    background = True  # a JVM: started first, scored on a worker thread

    def __init__(self, timeout_s: float = 600.0, java: str | None = None) -> None:
        super().__init__(timeout_s=timeout_s, java=java)
        self._process: JavaLineProcess | None = None

    def available(self) -> tuple[bool, str | None]:
        ok, reason = super().available()
        if ok and not meteor_jar().is_file():
            return False, f"unavailable: METEOR jar missing: {meteor_jar()}"
        return ok, reason

    def start(self) -> None:
        """Start the JVM now (the timeout counts from here)."""
        if self._process is None or not self._process.running:
            jar = meteor_jar()
            self._process = JavaLineProcess(
                ["-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
                cwd=jar.parent,
                timeout_s=self.timeout_s,
                java=self.java,
                what="METEOR",
            ).start()

    def close(self) -> None:
        if self._process is not None:
            self._process.close()
            self._process = None

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        ids = list(gts)
        if not ids:
            raise ValueError("METEOR needs at least one prediction")
        self.start()
        proc = self._process
        assert proc is not None
        try:
            proc.write_lines(
                [" ||| ".join(["SCORE", *map(_clean, gts[i]), _clean(res[i][0])]) for i in ids]
            )
            stats = [proc.readline() for _ in ids]
            bad = [s for s in stats if not s or s.startswith("Error")]
            if bad:
                raise JavaError(f"METEOR jar answered {bad[0]!r} to a SCORE line")
            proc.write_lines(["EVAL ||| " + " ||| ".join(stats)])
            answers = [proc.readline() for _ in range(len(ids) + 1)]
            try:
                value = float(answers[-1])
                [float(a) for a in answers[:-1]]
            except ValueError:
                raise JavaError(f"METEOR jar answered {answers[-1]!r} to EVAL") from None
        finally:
            self.close()
        return {"meteor": value}
