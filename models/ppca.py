"""Probabilistic PCA as a Pyro model (Tipping and Bishop 1999): the exact reference of ppvae.

    z_n ~ N(0, I_K),   x_n | z_n ~ N(W z_n + b, sigma^2 I_D)

W, b and sigma are learnable (``PyroParam``; sigma constrained positive) or fixed to given
values (``fixed=True``). Its posterior, marginal likelihood and MLE have closed forms in
:mod:`ppvae.analysis.ppca`; :meth:`PPCA.params` hands the current values to them.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from ..analysis.ppca import PPCAParams
from ..nn import unique_name

__all__ = ["PPCA"]


class PPCA(PyroModule):
    """PPCA with data dimension D and latent dimension K.

    Args:
        data_dim, latent_dim: D and K.
        W, b, sigma: initial (or, with ``fixed=True``, fixed) values; defaults are a small
            random W (seeded by torch's global generator), b = 0, sigma = 1.
        fixed: keep W, b, sigma as buffers (not trained).
        name: the Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, latent_dim: int, *, W=None, b=None, sigma=None,
                 fixed: bool = False, name: str | None = None):
        super().__init__(unique_name("ppca", name))
        self.data_dim, self.latent_dim = data_dim, latent_dim
        W = torch.as_tensor(W) if W is not None else 0.1 * torch.randn(data_dim, latent_dim)
        b = torch.as_tensor(b) if b is not None else torch.zeros(data_dim)
        sigma = torch.as_tensor(sigma if sigma is not None else 1.0, dtype=W.dtype)
        if W.shape != (data_dim, latent_dim) or b.shape != (data_dim,):
            raise ValueError(
                f"W must be [{data_dim}, {latent_dim}] and b [{data_dim}], got "
                f"{tuple(W.shape)} and {tuple(b.shape)}"
            )
        if fixed:
            self.register_buffer("W", W.clone())
            self.register_buffer("b", b.clone())
            self.register_buffer("sigma", sigma.clone().reshape(()))
        else:
            self.W = PyroParam(W.clone())
            self.b = PyroParam(b.clone())
            self.sigma = PyroParam(sigma.clone().reshape(()), constraint=constraints.positive)

    def forward(self, x: torch.Tensor) -> None:
        """Sample ``"z"`` from N(0, I) and observe x under N(W z + b, sigma^2 I)."""
        if x.shape[-1] != self.data_dim:
            raise ValueError(f"PPCA expects x of shape [N, {self.data_dim}], got {tuple(x.shape)}")
        W, b, sigma = self.W, self.b, self.sigma
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)  # [..., N, K]
            pyro.sample("x", dist.Normal(z @ W.T + b, sigma).to_event(1), obs=x)

    def params(self) -> PPCAParams:
        """The current W, b, sigma (detached), for the closed forms of :mod:`ppvae.analysis.ppca`.

        Returns:
            A :class:`PPCAParams`.
        """
        return PPCAParams(self.W.detach(), self.b.detach(), self.sigma.detach())
