"""``cora-kit new-plugin``: write a ready-to-install third-party plugin package skeleton.

The templates live in ``cora_kit/assets/plugin_template/`` (``string.Template`` files,
``${name}`` placeholders). The generated package registers one plugin through the
``cora_kit`` entry point group and tests itself with ``cora_kit.testing``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from string import Template

import typer

from cora_kit.errors import CoraKitError
from cora_kit.hookspecs import HOOK_FOR_KIND
from cora_kit.registry import NAME_PATTERN

#: kinds with a template implementation -> one-line description of the generated plugin
TEMPLATE_KINDS: dict[str, str] = {
    "resampler": "LayerNorm + linear resampler",
    "loss": "cosine-distance overlap loss",
    "stitcher": "keep-every-token stitcher",
    "metric": "unigram-F1 caption metric",
}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def template_values(kind: str, name: str) -> dict[str, str]:
    """Placeholder values: distribution ``cora-kit-<name>``, module ``cora_kit_<name>``, ..."""
    from cora_kit import __version__

    if kind not in TEMPLATE_KINDS:
        raise CoraKitError(
            f"new-plugin has no template for kind '{kind}'; choose one of: {', '.join(TEMPLATE_KINDS)}"
        )
    if not NAME_PATTERN.match(name):
        raise CoraKitError(f"plugin name '{name}' must be lowercase kebab-case, e.g. 'my-resampler'")
    base = name.removeprefix("cora-kit-")
    class_name = _camel(base)
    if not class_name.endswith(kind.capitalize()):
        class_name += kind.capitalize()
    core = __version__.split("+")[0]
    return {
        "kind": kind,
        "name": name,
        "dist": f"cora-kit-{base}",
        "module": f"cora_kit_{base.replace('-', '_')}",
        "entry": base.replace("-", "_"),
        "class_name": class_name,
        "hook": HOOK_FOR_KIND[kind],
        "description": TEMPLATE_KINDS[kind],
        "core_version": core if core[:1].isdigit() else "0.1",
    }


def generate(kind: str, name: str, out: Path, force: bool = False) -> list[Path]:
    """Write the package for plugin ``name`` of ``kind`` into ``out``; returns the files written."""
    values = template_values(kind, name)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CoraKitError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise CoraKitError(f"--out {out} is not empty; choose a new directory or pass --force")
    root = files("cora_kit") / "assets" / "plugin_template"
    src = Path("src") / values["module"]
    layout = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        str(src / "__init__.py"): None,
        str(src / "plugin.py"): "plugin.py.tmpl",
        str(src / f"{kind}.py"): f"{kind}.py.tmpl",
        "tests/test_contract.py": "test_contract.py.tmpl",
    }
    written = []
    for rel, template in layout.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if template is None:
            text = f'"""{values["dist"]}: a cora-kit {kind} plugin ({values["description"]})."""\n'
        else:
            text = Template((root / template).read_text(encoding="utf-8")).substitute(values)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def new_plugin(
    kind: str = typer.Option(..., "--kind", "-k", help=f"One of: {', '.join(TEMPLATE_KINDS)}."),
    name: str = typer.Option(..., "--name", "-n", help="Plugin name, lowercase kebab-case."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to create (must be empty)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty directory."),
) -> None:
    """Write a third-party plugin package (pyproject entry point, implementation, test, README)."""
    written = generate(kind, name, out, force)
    values = template_values(kind, name)
    typer.echo(f"wrote {values['dist']} ({kind} '{name}') to {out}:")
    for path in written:
        typer.echo(f"  {path.relative_to(out)}")
    typer.echo(f"next: pip install -e {out} && cora-kit check-plugin {name} --kind {kind}")


def register(app: typer.Typer) -> None:
    app.command("new-plugin")(new_plugin)
