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


# --- the import graph: downward only, no cycles (DESIGN.md section 1) ------------------

#: layers of cora_kit, lowest first; a module may import its own layer or a lower one.
#: A prefix covers a package and its sub-modules ("cora_kit" itself is the package init).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cora_kit.errors", "cora_kit.hookspecs", "cora_kit.device", "cora_kit.fs"),
    ("cora_kit", "cora_kit.registry", "cora_kit.plugin_spec", "cora_kit.geometry", "cora_kit.overlap", "cora_kit.data"),
    ("cora_kit.interfaces", "cora_kit.config", "cora_kit.plugin_options"),
    ("cora_kit.eval", "cora_kit.train", "cora_kit.models", "cora_kit.testing"),
    ("cora_kit.pipeline",),
    ("cora_kit.serving", "cora_kit.bench"),
    ("cora_kit.commands", "cora_kit.cli", "cora_kit.__main__"),
)
#: upward edges allowed by name: the package root's PEP 562 ``__getattr__`` hands out the
#: public ``cora_kit.Captioner`` on first access (a function-level import, never run at
#: import time, so it adds no import-time cycle either). Checked to stay function-level.
LAZY_FACADE: frozenset[tuple[str, str]] = frozenset({("cora_kit", "cora_kit.serving.captioner")})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _core_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / "cora_kit").rglob("*.py"))}


def _layer(module: str) -> int:
    for level, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "cora_kit" and module.startswith(name + ".")):
                return level
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py::LAYERS; place it there (DESIGN.md section 1)")


def _core_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """cora_kit modules imported anywhere in ``path`` (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "cora_kit")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "cora_kit":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != me}


def test_imports_run_downward_only():
    modules = _core_modules()
    upward = []
    for name, path in modules.items():
        for dep in sorted(_core_imports(path, modules)):
            if _layer(dep) > _layer(name) and (name, dep) not in LAZY_FACADE:
                upward.append(f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})")
    assert not upward, "imports must run downward (DESIGN.md section 1):\n" + "\n".join(upward)


def test_no_import_cycles():
    modules = _core_modules()
    graph = {name: {d for d in _core_imports(path, modules) if (name, d) not in LAZY_FACADE}
             for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles in cora_kit:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layering_test_sees_real_edges():
    """The graph walker finds known imports (so the two tests above cannot pass vacuously)."""
    modules = _core_modules()
    assert "cora_kit.pipeline" in _core_imports(modules["cora_kit.serving.loading"], modules)
    assert "cora_kit.registry" in _core_imports(modules["cora_kit.pipeline.build"], modules)
    assert "cora_kit.testing.base" in _core_imports(modules["cora_kit.testing"], modules)


def test_lazy_facade_imports_stay_inside_functions():
    """``cora_kit/__init__.py`` reaches serving only inside ``__getattr__`` (not at import)."""
    tree = ast.parse((ROOT / "cora_kit" / "__init__.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("serving" in (getattr(n, "module", "") or "") or any("serving" in a.name for a in n.names)
                   for n in top)
