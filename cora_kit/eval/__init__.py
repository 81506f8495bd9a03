"""Evaluation: Stage-1 diagnostics and caption scoring."""
