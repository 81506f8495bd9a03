"""``cora-kit run`` through the CLI: flags, early errors (exit 2), and a run on the fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_fake import fake_factory, make_splits

from cora_kit.cli import main
from cora_kit.commands.run import parse_stages
from cora_kit.plugin_options import parse_option_pairs
from cora_kit.errors import ConfigError

FAST = ["--set", "device=cpu", "--set", "eval.metrics=[cider]", "--set", "stages.stage1.max_steps=2",
        "--set", "stages.stage2.max_steps=2", "--set", "stages.stage3.max_steps=2", "--set", "stages.stage2.grad_accum=1"]


def test_parse_stages_and_options() -> None:
    assert parse_stages("3,1") == (1, 3)
    with pytest.raises(ConfigError):
        parse_stages("1,4")
    with pytest.raises(ConfigError):
        parse_stages("a")
    assert parse_option_pairs(["d_state=16", "name=x"], "--resampler-opt") == {"d_state": 16, "name": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_option_pairs(["oops"], "--loss-opt")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--resampler", "bimambaa"], "bimamba"),
        (["--loss", "densecll"], "densecl"),
        (["--resampler", "mlp", "--resampler-opt", "nope=1"], "nope"),
        (["--stages", "1,5"], "--stages"),
        (["--preset", "tinyy"], "tiny"),
        (["--set", "stages.stage1.lrr=1"], "lr"),
    ],
)
def test_bad_input_exits_2_with_a_hint(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    code = main(["run", *argv, "--out", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written before validation


def test_run_command_writes_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import cora_kit.train.engine as engine
    from cora_kit.pipeline import CoraModel

    monkeypatch.setattr(CoraModel, "from_config", staticmethod(fake_factory))
    monkeypatch.setattr(engine, "load_splits", lambda config: make_splits(16, 4, 4))
    argv = ["run", "--resampler", "mlp", "--loss", "densecl", "--seed", "3", "--out", str(tmp_path), "--plain", *FAST]
    assert main(argv) == 0
    run_dir = tmp_path / "mlp-densecl-s3"
    assert (run_dir / "summary.md").is_file()
    cfg = (run_dir / "config.yaml").read_text()
    assert "seed: 3" in cfg and "name: densecl" in cfg
    assert json.loads((run_dir / "scores.json").read_text())["num_items"] == 4
    err = capsys.readouterr().err
    assert "stage 1 epoch" in err  # plain one-line log when not a TTY
    # a second run into the same folder must be explicit
    assert main(argv) == 2
    assert main([*argv, "--resume"]) == 0


def test_run_protocol_paper_scores_reference_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cora_kit.train.engine as engine
    from cora_kit.pipeline import CoraModel

    monkeypatch.setattr(CoraModel, "from_config", staticmethod(fake_factory))
    monkeypatch.setattr(engine, "load_splits", lambda config: make_splits(16, 4, 4))
    argv = ["run", "--resampler", "mlp", "--loss", "none", "--out", str(tmp_path), "--plain", *FAST,
            "--protocol", "paper", "--set", "eval.metrics=[bleu4,rouge_l]", "--name", "p"]
    assert main(argv) == 0
    scores = json.loads((tmp_path / "p" / "scores.json").read_text())
    assert scores["protocol"] == "paper" and scores["num_items"] == 4 and scores["num_rows"] == 8
    assert set(scores["panorama"]) == {"bleu4", "rouge_l", "unavailable"}
    assert scores["implementations"]["bleu4"].startswith("sacrebleu")
    assert "eval:\n  metrics:\n  - bleu4\n  - rouge_l\n" in (tmp_path / "p" / "config.yaml").read_text()
    assert "Scoring protocol `paper`" in (tmp_path / "p" / "summary.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [(["--protocol", "seed"], "eval.protocol"), (["--protocol", "paper", "--set", "eval.metrics=[bleu1]"], "bleu1")],
)
def test_bad_protocol_exits_2_before_writing(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["run", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
