"""The ablation runner behind ``cora-kit bench``."""
