"""cora-kit's built-in plugins.

Each sub-package is one ``cora_kit`` entry point (see pyproject.toml) holding the
registration hook of one kind; the core never imports this package.
"""
