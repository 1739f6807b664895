"""Amortized diagonal-Gaussian MLP encoder, the recognition network of Kingma and Welling (2014).

q(z | x) = N(mu(x), diag sigma(x)^2), with mu and sigma from one MLP on the flattened input
(softplus for sigma, plus a small floor for stability). The inference network of the standard
VAE; its amortization gap is what ppvae measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["MLPEncoder"]


class MLPEncoder(PyroModule):
    """Diagonal-Gaussian encoder: x [N, ...] -> N(mu, diag sigma^2) over latent [N, K].

    Args:
        data_dim: flattened input size (product of x.shape[1:]).
        latent_dim: K.
        hidden: hidden layer sizes.
        latent: the latent site name the model uses.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
        min_scale: floor added to the softplus scale.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,), *,
                 activation: type[nn.Module] = nn.ReLU, latent: str = "z",
                 name: str | None = None, min_scale: float = 1e-4):
        super().__init__(unique_name("encoder", name))
        self.data_dim, self.latent_dim, self.latent = data_dim, latent_dim, latent
        self.min_scale = min_scale
        self.net = mlp([data_dim, *hidden, 2 * latent_dim], activation)

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x_n) with batch shape [N] and event shape [K]."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)
        loc, raw = self.net(flat).chunk(2, dim=-1)  # [N, K] each
        scale = nn.functional.softplus(raw) + self.min_scale
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the latent from q(z | x) inside the ``"data"`` plate."""
        q = self.distribution(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
