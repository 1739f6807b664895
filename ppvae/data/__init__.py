"""Data sets for ppvae: synthetic data with known parameters (more loaders join here)."""

from .binarize import binarize, dynamic_binarize
from .datasets import DATASETS, Dataset, default_root, load_dataset
from .synthetic import PPCAData, ppca_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "PPCAData",
    "binarize",
    "default_root",
    "dynamic_binarize",
    "load_dataset",
    "ppca_dataset",
]
