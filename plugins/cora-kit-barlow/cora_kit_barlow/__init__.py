"""cora-kit-barlow: an example third-party cora-kit plugin distribution."""
