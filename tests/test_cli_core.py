"""The CLI shell: --version, plugins, config show, one-line user errors with exit 2."""

from __future__ import annotations

import json

from cora_kit import __version__
from cora_kit.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_plugins_json_lists_builtins(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {(r["kind"], r["name"]): r for r in rows}
    for name in ("identity", "mlp"):
        row = by_name[("resampler", name)]
        assert row["distribution"] == "cora-kit" and row["status"] == "ok"
    assert by_name[("resampler", "mlp")]["num_params"] == 5711872  # seed MLP 1152->1536->1536->1024


def test_plugins_table(capsys):
    assert main(["plugins", "--kind", "resampler"]) == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "params" in out


def test_user_error_is_one_line_exit_2(capsys):
    assert main(["plugins", "--kind", "resamplers"]) == 2
    err = capsys.readouterr().err
    assert "unknown plugin kind" in err and "Traceback" not in err


def test_config_show_and_errors(tmp_path, capsys):
    assert main(["config", "show", "--preset", "paper", "--set", "seed=4"]) == 0
    out = capsys.readouterr().out
    assert "preset: paper" in out and "seed: 4" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense_key: 1\n")
    assert main(["config", "show", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "nonsense_key" in err and "bad.yaml" in err and "Traceback" not in err


def test_missing_config_file_exit_2(capsys):
    assert main(["config", "show", "--config", "/nonexistent/x.yaml"]) == 2
    assert "not found" in capsys.readouterr().err
