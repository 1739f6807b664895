"""Data sets for ppvae: synthetic data with known parameters (more loaders join here)."""

from .synthetic import PPCAData, ppca_dataset

__all__ = ["PPCAData", "ppca_dataset"]
