"""Amortized delta (point-mass) guide: q(z | x) = delta(z - f(x)), the autoencoder's encoder.

With a point mass, Pyro's ELBO estimator returns ``log p(x, f(x))``: the joint density at the
encoder's point estimate (the MAP objective with the model's prior, the plain reconstruction
log-likelihood with a flat prior). This is the classical autoencoder read as the zero-variance
limit of the VAE (Kingma and Welling 2014, section 3; Vincent et al. 2010 for the
reconstruction view). For a continuous latent the number ppvae reports as "ELBO" is then that
objective, not a lower bound on log p(x) (the entropy of a point mass is minus infinity), and
all particles coincide, so IWAE_k equals it for every k. Use it to compare reconstruction, not
log-likelihood; see :class:`models.Autoencoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["DeltaEncoder"]


class DeltaEncoder(PyroModule):
    """Point-mass encoder: x [N, ...] -> delta at f(x) [N, K].

    Args:
        data_dim: flattened input size.
        latent_dim: K.
        hidden: hidden layer sizes of the MLP f.
        latent: the latent site name the model uses.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,), *,
                 activation: type[nn.Module] = nn.ReLU, latent: str = "z",
                 name: str | None = None):
        super().__init__(unique_name("delta_encoder", name))
        self.data_dim, self.latent_dim, self.latent = data_dim, latent_dim, latent
        self.net = mlp([data_dim, *hidden, latent_dim], activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The point estimate f(x), ``[N, K]``."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)
        return self.net(flat)

    def distribution(self, x: torch.Tensor) -> dist.Delta:
        """q(z | x_n): a point mass with batch shape [N] and event shape [K]."""
        return dist.Delta(self.encode(x), event_dim=1)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the latent at the point f(x) inside the ``"data"`` plate."""
        q = self.distribution(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
