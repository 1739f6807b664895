"""Synthetic data sets with known generating parameters (the exact references of ppvae).

:func:`ppca_dataset` draws from a probabilistic PCA model (Tipping and Bishop 1999) with a
seeded generator, and returns the parameters and the latent that produced each row, so tests and
studies can compare estimates to closed-form answers (:mod:`ppvae.analysis.ppca`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["PPCAData", "ppca_dataset"]


class PPCAData(NamedTuple):
    """A PPCA sample: observations, their latents and the true parameters."""
    x: torch.Tensor  # [N, D] observations
    z: torch.Tensor  # [N, K] the latents that generated them
    W: torch.Tensor  # [D, K]
    b: torch.Tensor  # [D]
    sigma: torch.Tensor  # [] noise standard deviation


def ppca_dataset(
    num_data: int = 500,
    data_dim: int = 10,
    latent_dim: int = 3,
    sigma: float = 0.5,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> PPCAData:
    """Draw ``num_data`` rows from a PPCA with random W (entries N(0, 1)), b (N(0, 1)), ``sigma``.

    The same seed gives the same parameters and data on every machine (CPU generator).
    """
    if not 0 < latent_dim <= data_dim:
        raise ValueError(f"need 0 < latent_dim <= data_dim, got {latent_dim}, {data_dim}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(data_dim, latent_dim, generator=g, dtype=dtype)
    b = torch.randn(data_dim, generator=g, dtype=dtype)
    z = torch.randn(num_data, latent_dim, generator=g, dtype=dtype)
    eps = torch.randn(num_data, data_dim, generator=g, dtype=dtype)
    x = z @ W.T + b + sigma * eps
    s = torch.tensor(sigma, dtype=dtype)
    return PPCAData(*(t.to(device) for t in (x, z, W, b, s)))
