"""Layout rules: the core imports no concrete plugin; the package list is complete."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = ("cora_kit_builtins", "cora_kit_barlow")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return names


def test_core_never_imports_a_concrete_plugin():
    offenders = []
    for path in sorted((ROOT / "cora_kit").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in PLUGIN_PACKAGES:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "the core must reach plugins only through entry points:\n" + "\n".join(offenders)


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for init in (ROOT / "cora_kit").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "plugins" / "cora_kit_builtins").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT / "plugins").parts))
    assert found - listed == set(), "add these packages to [tool.setuptools] packages"


def test_no_generic_top_level_package():
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert {p.split(".")[0] for p in listed} == {"cora_kit", "cora_kit_builtins"}
