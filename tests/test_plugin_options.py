"""Plugin choices as text: ``[dist:]name[:key=value...]``, option flags, folder names."""

from __future__ import annotations

import pytest

from cora_kit.errors import ConfigError
from cora_kit.plugin_options import choice_from_value, folder_name, parse_choice, parse_option_pairs


@pytest.mark.parametrize(
    "text,name,options",
    [
        ("mlp", "mlp", {}),
        ("cora-kit:mlp", "cora-kit:mlp", {}),
        ("vicreg:variant=pairwise", "vicreg", {"variant": "pairwise"}),
        ("cora-kit:vicreg:variant=pairwise:gamma=2", "cora-kit:vicreg", {"variant": "pairwise", "gamma": 2}),
        (" bimamba : d_state = 8 ", "bimamba", {"d_state": 8}),
        ("x:flag=true:sizes=[1, 2]", "x", {"flag": True, "sizes": [1, 2]}),
    ],
)
def test_parse_choice(text: str, name: str, options: dict) -> None:
    choice = parse_choice(text, "--losses")
    assert (choice.name, choice.options) == (name, options)
    assert parse_choice(choice.label, "--losses").options == options  # the label reads back


@pytest.mark.parametrize("text", ["", "a:b:c", "a=1", "x:1=2", "a:b=1:c", ":x"])
def test_bad_choices_name_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--losses"):
        parse_choice(text, "--losses")


def test_mapping_choices_from_experiment_files() -> None:
    c = choice_from_value({"name": "vicreg", "options": {"variant": "pairwise", "path": "a:b"}}, "e.yaml")
    assert c.name == "vicreg" and c.options == {"variant": "pairwise", "path": "a:b"}
    assert c.label == 'vicreg:variant=pairwise:path="a:b"'
    for bad in ({"name": 3}, {"name": "x", "opts": {}}, ["x"], {"name": "x", "options": [1]}):
        with pytest.raises(ConfigError, match="e.yaml"):
            choice_from_value(bad, "e.yaml")


def test_option_pairs() -> None:
    assert parse_option_pairs(["d_state=16", "name=x", "empty="], "--resampler-opt") == {
        "d_state": 16, "name": "x", "empty": ""}
    for bad in ("oops", "=3", "a.b=1", "two words=1"):
        with pytest.raises(ConfigError, match="--resampler-opt"):
            parse_option_pairs([bad], "--resampler-opt")


def test_folder_names_are_reversible_in_principle() -> None:
    """Different labels never share a folder; plain names and seeds stay as they are."""
    from urllib.parse import unquote

    for label in ("mlp", "c-abstractor", "cora-kit:mlp", "vicreg:variant=pairwise", "a_b", "a__b", "_a", "a b/c", "é"):
        folder = folder_name(label)
        assert unquote(folder.replace("+", ":")) == label
    assert folder_name("seed0") == "seed0"
