"""SPICE 1.0 (COCO) through pycocoevalcap's ``spice-1.0.jar``, offline only.

SPICE needs Stanford CoreNLP 3.6.0 (``stanford-corenlp-3.6.0.jar`` and
``stanford-corenlp-3.6.0-models.jar``). pycocoevalcap's ``Spice()`` downloads a zip over
plain http with no timeout when they are missing from its ``spice/lib`` folder; cora-kit
never does: it looks for the two jars in, in order, the ``corenlp_dir`` parameter,
``$CORA_KIT_SPICE_CORENLP_DIR`` and pycocoevalcap's ``spice/lib``, and reports
"unavailable: ..." (NaN in tables) when they are absent. Temp files go to the system temp
folder, not pycocoevalcap's install folder. Value: mean over items of SPICE's "All" F1,
exactly as pycocoevalcap computes it (NaN items make the mean NaN, as there).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydantic import Field

from cora_kit_builtins.metrics.coco import CocoMetric, CocoParams
from cora_kit_builtins.metrics.java import run_java

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
ENV_CORENLP_DIR = "CORA_KIT_SPICE_CORENLP_DIR"
SPICE_MAIN_CLASS = "edu.anu.spice.SpiceScorer"


class SpiceParams(CocoParams):
    """SPICE parameters: where the CoreNLP 3.6.0 jars are, and an optional cache."""

    corenlp_dir: str | None = Field(None, description=f"folder with {', '.join(CORENLP_JARS)}")
    cache_dir: str | None = Field(None, description="SPICE parse cache folder (LMDB)")
    max_heap: str = Field("8G", description="java -Xmx value")


def spice_dir() -> Path:
    """pycocoevalcap's ``spice`` folder (jar + ``lib``)."""
    from pycocoevalcap import spice

    return Path(list(spice.__path__)[0])


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


class Spice(CocoMetric):
    """SPICE 1.0 (scene-graph F1; needs CoreNLP 3.6.0 jars on disk, never downloads them)."""

    key = "spice"

    def __init__(
        self,
        timeout_s: float = 600.0,
        java: str | None = None,
        corenlp_dir: str | None = None,
        cache_dir: str | None = None,
        max_heap: str = "8G",
    ) -> None:
        super().__init__(timeout_s=timeout_s, java=java)
        self.corenlp_dir = corenlp_dir
        self.cache_dir = cache_dir
        self.max_heap = max_heap

    def candidate_dirs(self) -> list[Path]:
        """Folders searched for the CoreNLP jars, in order."""
        dirs = [self.corenlp_dir, os.environ.get(ENV_CORENLP_DIR)]
        out = [Path(d).expanduser() for d in dirs if d]
        return [*out, spice_dir() / "lib"]

    def corenlp_jars(self) -> list[Path] | None:
        for folder in self.candidate_dirs():
            jars = [folder / name for name in CORENLP_JARS]
            if all(j.is_file() for j in jars):
                return jars
        return None

    def available(self) -> tuple[bool, str | None]:
        ok, reason = super().available()
        if not ok:
            return ok, reason
        if not (spice_dir() / "spice-1.0.jar").is_file():
            return False, f"unavailable: SPICE jar missing: {spice_dir() / 'spice-1.0.jar'}"
        if self.corenlp_jars() is None:
            searched = ", ".join(str(d) for d in self.candidate_dirs())
            return False, (
                f"unavailable: SPICE needs Stanford CoreNLP 3.6.0 ({' and '.join(CORENLP_JARS)},"
                f" from stanford-corenlp-full-2015-12-09.zip), not found in: {searched}."
                f" Put them in a folder and pass corenlp_dir or set {ENV_CORENLP_DIR}"
                " (cora-kit never downloads them)"
            )
        return True, None

    def classpath(self) -> str:
        jars = self.corenlp_jars()
        if jars is None:
            raise RuntimeError(self.available()[1])
        lib = spice_dir() / "lib"
        parts = [spice_dir() / "spice-1.0.jar", *jars, lib / "*"]
        return os.pathsep.join(str(p) for p in parts)

    def score_tokenized(
        self, res: Mapping[str, list[str]], gts: Mapping[str, list[str]]
    ) -> dict[str, float]:
        ids = sorted(gts)
        rows = [{"image_id": i, "test": res[i][0], "refs": list(gts[i])} for i in ids]
        with tempfile.TemporaryDirectory(prefix="cora-kit-spice-") as tmp:
            src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
            src.write_text(json.dumps(rows), encoding="utf-8")
            args = [f"-Xmx{self.max_heap}", "-cp", self.classpath(), SPICE_MAIN_CLASS, str(src)]
            if self.cache_dir:
                args += ["-cache", str(Path(self.cache_dir).expanduser())]
            args += ["-out", str(dst), "-subset", "-silent"]
            run_java(args, cwd=spice_dir(), timeout_s=self.timeout_s, java=self.java, what="SPICE")
            results = json.loads(dst.read_text(encoding="utf-8"))
        per_item = [_float(item["scores"]["All"]["f"]) for item in results]
        if len(per_item) != len(ids):
            raise RuntimeError(f"SPICE returned {len(per_item)} results for {len(ids)} items")
        return {"spice": float(np.mean(np.array(per_item)))}
