"""Hierarchical VAE with two stochastic layers, z2 -> z1 -> x.

After Burda, Grosse and Salakhutdinov (2016, section 5) and Sønderby et al. (2016):

    z2_n ~ N(0, I_K2),    z1_n | z2_n ~ N(mu(z2_n), diag sigma(z2_n)^2),
    x_n | z1_n ~ Bernoulli(logits = g(z1_n)),

mu, sigma and g MLPs. The likelihood is stated once, as the observed site ``"x"``; the latent
sites are ``"z1"`` (size K1) and ``"z2"`` (size K2), both inside the data plate, so every ppvae
analysis applies unchanged (log weights sum over both layers). Guides:
:class:`guides.BottomUpGuide` (q(z1 | x) q(z2 | z1), Burda et al.) and
:class:`guides.LadderGuide` (q(z2 | x) q(z1 | z2, x) by precision-weighting the model's top-down
prior with a bottom-up estimate, Sønderby et al.).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["HierarchicalVAE"]


class HierarchicalVAE(PyroModule):
    """Two-layer VAE model ``model(x)``: latents ``"z2"`` [N, K2] and ``"z1"`` [N, K1].

    Args:
        data_dim: D (flattened).
        latent_dims: (K1, K2), the sizes of the lower and upper stochastic layers.
        hidden: hidden sizes of the decoder g (z1 -> x).
        top_hidden: hidden sizes of the top-down network (z2 -> mu, sigma of z1).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, latent_dims: tuple[int, int] = (8, 2),
                 hidden: Sequence[int] = (200,), top_hidden: Sequence[int] = (64,), *,
                 name: str | None = None, min_scale: float = 1e-3):
        super().__init__(unique_name("hvae", name))
        self.data_dim = data_dim
        self.k1, self.k2 = latent_dims
        self.min_scale = min_scale
        self.topdown = mlp([self.k2, *top_hidden, 2 * self.k1], nn.Tanh)
        self.decoder = mlp([self.k1, *hidden, data_dim])

    def z1_prior(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of p(z1 | z2) for ``z2 [..., N, K2]``: two ``[..., N, K1]`` tensors."""
        loc, raw = self.topdown(z2).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw) + self.min_scale

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z2"``, then ``"z1"`` given z2, and observe the flattened x given z1."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)  # [N, D]
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(flat.new_zeros(self.k2), 1.0).to_event(1))
            loc, scale = self.z1_prior(z2)  # [..., N, K1] each
            z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z1)).to_event(1), obs=flat)
