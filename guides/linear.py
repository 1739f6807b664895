"""Amortized linear Gaussian guides: q(z | x) = N(A x + c, S), S full (Cholesky) or diagonal.

The PPCA posterior is exactly of this form with a covariance shared by all datapoints
(Tipping and Bishop 1999), so the full-covariance guide can represent it: its amortization and
approximation gaps on PPCA are zero at the optimum, and the diagonal guide's approximation gap
is the mean-field gap of :func:`ppvae.analysis.ppca.mean_field_gap`.
:meth:`AmortizedLinearGaussian.from_ppca` builds the exact (or best diagonal) posterior directly.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from ..analysis.ppca import ppca_posterior
from ..nn import unique_name

__all__ = ["AmortizedLinearGaussian"]


class AmortizedLinearGaussian(PyroModule):
    """q(z | x) = N(x A^T + c, L L^T) (``covariance="full"``) or N(x A^T + c, diag(s^2)).

    Args:
        data_dim, latent_dim: D and K.
        covariance: "full" (lower-Cholesky L, shared across datapoints) or "diag".
        latent: the latent site name the model uses.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, latent_dim: int, covariance: str = "full", *,
                 latent: str = "z", name: str | None = None, init_scale: float = 0.1):
        super().__init__(unique_name(f"linear_{covariance}", name))
        if covariance not in ("full", "diag"):
            raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.covariance, self.latent = covariance, latent
        self.weight = PyroParam(torch.zeros(latent_dim, data_dim))  # A [K, D]
        self.bias = PyroParam(torch.zeros(latent_dim))  # c [K]
        if covariance == "full":
            self.scale_tril = PyroParam(init_scale * torch.eye(latent_dim),
                                        constraint=constraints.lower_cholesky)
        else:
            self.scale = PyroParam(init_scale * torch.ones(latent_dim),
                                   constraint=constraints.positive)

    @classmethod
    def from_ppca(cls, W, b, sigma, covariance: str = "full", **kwargs):
        """The exact PPCA posterior (full), or the best mean-field Gaussian to it (diag)."""
        d, k = W.shape
        guide = cls(d, k, covariance, **kwargs).to(W.dtype)
        eye = torch.eye(d, dtype=W.dtype)
        mean0, cov = ppca_posterior(W, b, sigma, torch.zeros(1, d, dtype=W.dtype))
        gain = ppca_posterior(W, b, sigma, eye)[0] - mean0  # row i: response to e_i -> A^T
        guide.weight = PyroParam(gain.T.clone())
        guide.bias = PyroParam(mean0[0].clone())
        if covariance == "full":
            guide.scale_tril = PyroParam(torch.linalg.cholesky(cov),
                                         constraint=constraints.lower_cholesky)
        else:  # mean-field optimum: precision matched on the diagonal
            prec = torch.linalg.inv(cov)
            guide.scale = PyroParam(torch.diagonal(prec).rsqrt(), constraint=constraints.positive)
        return guide

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x_n) with batch shape [N] and event shape [K]."""
        loc = x @ self.weight.T + self.bias  # [N, K]
        if self.covariance == "full":
            return dist.MultivariateNormal(loc, scale_tril=self.scale_tril)
        return dist.Normal(loc, self.scale).to_event(1)

    def forward(self, x: torch.Tensor) -> None:
        """Sample the latent from q(z | x) inside the ``"data"`` plate (x must be [N, D])."""
        if x.shape[-1] != self.data_dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape [N, {self.data_dim}], got "
                f"{tuple(x.shape)}"
            )
        q = self.distribution(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
