"""Conditional VAE (Sohn, Lee and Yan 2015): a class label c conditions prior and likelihood.

    z_n | c_n ~ p(z | c_n),    x_n | z_n, c_n ~ Bernoulli(logits = g([z_n, onehot(c_n)])),

with p(z | c) the standard normal (``learned_prior=False``, the common "CVAE" of Kingma et al.
2014's M2 without the classifier) or a learned N(mu(c), diag sigma(c)^2) (``learned_prior=True``,
the conditional prior network of Sohn et al.). Labels are a keyword argument ``y`` (integers
``[N]``) passed to model and guide alike: ``model(x, y=y)``. The likelihood is stated once, as
the observed site ``"x"``. :meth:`CVAE.sample` draws label-conditioned images. Pair it with
:class:`guides.ConditionalEncoder`, q(z | x, c).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import mlp, unique_name

__all__ = ["CVAE", "one_hot"]


def one_hot(y: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Integer labels ``[N]`` -> one-hot ``[N, C]`` in ``like``'s dtype and device."""
    if y.dim() != 1 or y.dtype.is_floating_point:
        raise ValueError(f"labels y must be integers of shape [N], got {y.dtype} {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, "
                         f"{int(y.max())}]")
    return nn.functional.one_hot(y.to(like.device), num_classes).to(like.dtype)


class CVAE(PyroModule):
    """Conditional VAE model ``model(x, y)``: latent ``"z"`` [N, K], observed ``"x"`` [N, D].

    Args:
        data_dim: D (flattened).
        num_classes: C.
        latent_dim: K.
        hidden: decoder hidden sizes.
        learned_prior: p(z | c) from a linear layer of the one-hot label instead of N(0, I).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, num_classes: int, latent_dim: int,
                 hidden: Sequence[int] = (200,), *, learned_prior: bool = False,
                 name: str | None = None):
        super().__init__(unique_name("cvae", name))
        self.data_dim, self.num_classes, self.latent_dim = data_dim, num_classes, latent_dim
        self.learned_prior = learned_prior
        self.decoder = mlp([latent_dim + num_classes, *hidden, data_dim])
        if learned_prior:
            self.prior_net = nn.Linear(num_classes, 2 * latent_dim)

    def prior(self, c: torch.Tensor) -> dist.TorchDistribution:
        """p(z | c) for one-hot labels ``[N, C]``: batch [N], event [K]."""
        if not self.learned_prior:
            return dist.Normal(c.new_zeros(c.shape[0], self.latent_dim), 1.0).to_event(1)
        loc, raw = self.prior_net(c).chunk(2, dim=-1)  # [N, K] each
        return dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1)

    def logits(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Pixel logits for latents ``[..., N, K]`` and one-hot labels ``[N, C]``."""
        c = c.expand(*z.shape[:-1], c.shape[-1])  # [..., N, C]
        return self.decoder(torch.cat([z, c], dim=-1))  # [..., N, D]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Sample ``"z"`` from p(z | c) and observe the flattened x given z and the labels ``y``."""
        flat = x.reshape(x.shape[0], -1)  # [N, D]
        if flat.shape[1] != self.data_dim:
            raise ValueError(f"CVAE expects {self.data_dim} features per datapoint, got x of "
                             f"shape {tuple(x.shape)}")
        c = one_hot(y, self.num_classes, flat)  # [N, C]
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior(c))  # [..., N, K]
            pyro.sample("x", dist.Bernoulli(logits=self.logits(z, c)).to_event(1), obs=flat)

    @torch.no_grad()
    def sample(self, y: torch.Tensor) -> torch.Tensor:
        """Decoder means (pixel probabilities) of one prior draw per label, ``[len(y), D]``."""
        like = next(self.decoder.parameters())
        c = one_hot(y, self.num_classes, like)  # [M, C]
        z = self.prior(c).sample()  # [M, K]
        return torch.sigmoid(self.logits(z, c))
