"""Packaged presets and experiment files (the repository folder ``configs/``)."""
