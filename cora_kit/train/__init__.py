"""The three-stage training engine."""
