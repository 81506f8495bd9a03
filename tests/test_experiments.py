"""The shipped experiment files: each paper-reproduction file names its table, runs the paper
preset on real data (``--data`` required, a clear error without it) and scores as the paper."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cora_kit.cli import main
from cora_kit.config import resolve_config
from cora_kit.errors import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
PAPER = sorted(EXPERIMENTS.glob("paper-*.yaml"))
REAL_DATA = PAPER + sorted(EXPERIMENTS.glob("seed-*.yaml"))


def test_there_is_a_file_per_shipped_table() -> None:
    assert [p.stem for p in PAPER] == ["paper-table1", "paper-table2a", "paper-tableS5"]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_file_names_its_table_first(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    table = path.stem.removeprefix("paper-table")
    assert first.startswith("# Reproduces Table ") and f"Table {table}" in first, first


@pytest.mark.parametrize("path", REAL_DATA, ids=lambda p: p.name)
def test_real_data_files_use_the_paper_preset_protocol_and_data(path: Path) -> None:
    exp = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert exp["preset"] == "paper"
    assert exp["config"]["data"] == {"required": True}
    assert exp["config"]["eval"]["protocol"] == "paper"
    assert "--data" in path.read_text(encoding="utf-8").split("\nname:")[0]  # the comment shows the command


def test_vicreg_variants_are_two_rows_of_one_grid() -> None:
    exp = yaml.safe_load((EXPERIMENTS / "seed-losses.yaml").read_text(encoding="utf-8"))
    assert {"vicreg:variant=batchwise", "vicreg:variant=pairwise"} <= set(exp["losses"])


def test_bench_without_data_stops_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    assert main(["bench", str(EXPERIMENTS / "paper-table2a.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pass --data DIR" in err and "data.required" in err and "Traceback" not in err
    assert not out.exists()


def test_data_required_names_the_file_line_and_flag(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("preset: tiny\ndata:\n  required: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"exp\.yaml line 3: data\.required: .* pass --data DIR"):
        resolve_config(None, cfg)
    assert resolve_config(None, cfg, ["data.path=/some/folder"]).data.path == "/some/folder"
    assert resolve_config("tiny").data.required is False
