"""Datasets: the synthetic 360-degree captioning set, QuIC-360 / CORA CSV loaders."""
