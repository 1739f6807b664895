"""Amortized full-covariance Gaussian encoder: q(z | x) = N(mu(x), L(x) L(x)^T).

An MLP maps each datapoint to a mean and the K(K+1)/2 entries of a lower-triangular Cholesky
factor L(x) (positive diagonal through a softplus plus a floor), the "full-covariance Gaussian"
inference network of Kingma and Welling (2014, appendix C.2) and the richer family against which
Cremer, Li and Duvenaud (2018) measure the approximation gap of the diagonal encoder. It captures
posterior correlations between latent dimensions that :class:`guides.MLPEncoder` cannot.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["FullCovEncoder"]


class FullCovEncoder(PyroModule):
    """Full-covariance Gaussian encoder: x [N, ...] -> N(mu, L L^T) over latent [N, K].

    Args:
        data_dim: flattened input size (product of x.shape[1:]).
        latent_dim: K.
        hidden: hidden layer sizes of the MLP.
        latent: the latent site name the model uses.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
        min_scale: floor added to the softplus diagonal of L.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,), *,
                 activation: type[nn.Module] = nn.ReLU, latent: str = "z",
                 name: str | None = None, min_scale: float = 1e-4):
        super().__init__(unique_name("fullcov_encoder", name))
        self.data_dim, self.latent_dim, self.latent = data_dim, latent_dim, latent
        self.min_scale = min_scale
        num_tril = latent_dim * (latent_dim + 1) // 2
        self.net = mlp([data_dim, *hidden, latent_dim + num_tril], activation)
        rows, cols = torch.tril_indices(latent_dim, latent_dim)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def distribution(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """q(z | x_n) with batch shape [N] and event shape [K]."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)
        k = self.latent_dim
        out = self.net(flat)  # [N, K + K(K+1)/2]
        loc, entries = out[:, :k], out[:, k:]
        tril = flat.new_zeros(flat.shape[0], k, k)  # [N, K, K]
        tril[:, self._rows, self._cols] = entries
        diag = nn.functional.softplus(torch.diagonal(tril, dim1=-2, dim2=-1)) + self.min_scale
        tril = torch.tril(tril, diagonal=-1) + torch.diag_embed(diag)  # [N, K, K]
        return dist.MultivariateNormal(loc, scale_tril=tril)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the latent from q(z | x) inside the ``"data"`` plate."""
        q = self.distribution(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
