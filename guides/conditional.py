"""Label-conditional diagonal-Gaussian encoder q(z | x, c) for the conditional VAE.

The recognition network of Sohn, Lee and Yan (2015): an MLP on the concatenation of the
flattened datapoint and the one-hot label gives the mean and softplus scale of a diagonal
Gaussian. Takes the labels as the keyword ``y`` that :class:`models.CVAE` also receives.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import mlp, unique_name

__all__ = ["ConditionalEncoder"]


class ConditionalEncoder(PyroModule):
    """q(z | x, c) = N(mu(x, c), diag sigma(x, c)^2), latent [N, K]; call as ``guide(x, y=y)``.

    Args:
        data_dim: D (flattened).
        num_classes: C.
        latent_dim: K.
        hidden: hidden layer sizes.
        latent: latent site name.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, num_classes: int, latent_dim: int,
                 hidden: Sequence[int] = (200,), *, latent: str = "z",
                 name: str | None = None, min_scale: float = 1e-4):
        super().__init__(unique_name("conditional_encoder", name))
        self.data_dim, self.num_classes, self.latent_dim = data_dim, num_classes, latent_dim
        self.latent, self.min_scale = latent, min_scale
        self.net = mlp([data_dim + num_classes, *hidden, 2 * latent_dim])

    def distribution(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x_n, c_n) for labels ``y [N]``: batch shape [N], event shape [K]."""
        flat = x.reshape(x.shape[0], -1)  # [N, D]
        if flat.shape[1] != self.data_dim:
            raise ValueError(f"ConditionalEncoder expects {self.data_dim} features per "
                             f"datapoint, got x of shape {tuple(x.shape)}")
        c = nn.functional.one_hot(y.to(flat.device), self.num_classes).to(flat.dtype)  # [N, C]
        loc, raw = self.net(torch.cat([flat, c], dim=-1)).chunk(2, dim=-1)  # [N, K] each
        return dist.Normal(loc, nn.functional.softplus(raw) + self.min_scale).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Sample the latent from q(z | x, c) inside the ``"data"`` plate."""
        q = self.distribution(x, y)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
