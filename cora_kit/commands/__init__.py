"""CLI command groups (each module adds its commands to ``cora_kit.cli.app``)."""
