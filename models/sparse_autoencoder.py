"""The sparse autoencoder: an overcomplete code with an L1 penalty written as a Laplace prior.

    c_n ~ prod_j Laplace(0, 1 / lambda),   x_n | c_n ~ p(x | g(c_n)),   q(c | x) = delta(c - f(x)),

with the code size K free to exceed the data size D. With the point-mass guide
:class:`guides.SparseEncoder` the objective Pyro's ELBO estimator trains is

    log p(x_n | g(c_n)) + sum_j log Laplace(c_nj; 0, 1 / lambda)
        = log p(x_n | g(c_n)) - lambda * |c_n|_1 + K log(lambda / 2),

the reconstruction log-likelihood minus the L1 penalty lambda |c|_1 up to a constant: the L1
penalty *is* the negative log density of a Laplace prior, the sparse coding model of Olshausen
and Field (1996). Writing it as a prior keeps the model a density, so every ppvae estimator
stays honest (the joint is a proper density, nothing is added behind the engine's back) and the
prior can be sampled (:meth:`SparseAutoencoder.sample`). ``l1=0`` gives a flat (improper
uniform) prior, the unpenalized overcomplete autoencoder, as ``Autoencoder(prior="flat")``.

The other two sparsity mechanisms are not densities of the code and live elsewhere: the top-k
code of Makhzani and Frey (2014) is a property of the encoder (``SparseEncoder(k=...)``), and
the KL-to-target-rate penalty of Ng's notes / Lee et al. (2008) is a batch-level training
objective (:func:`ppvae.train.sparsity.sparsity_kl`).

As with :class:`models.Autoencoder`, the "ELBO" ppvae reports for the pair is this objective,
not a bound on log p(x) (a point mass over a continuous code has entropy minus infinity), and
IWAE_k equals it for every k. The Laplace prior is symmetric while relu or sigmoid codes are
non-negative; on non-negative codes it is the exponential prior up to log 2 per unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import constraints

from ..nn import flatten_rows, mlp, unique_name
from .vae import decoder_likelihood

__all__ = ["SPARSE_LIKELIHOODS", "SparseAutoencoder"]

SPARSE_LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")


class SparseAutoencoder(PyroModule):
    """Decoder model ``model(x)`` with code ``"z"`` [N, K] under a Laplace (L1) prior.

    Args:
        data_dim: D (flattened).
        code_dim: K, the code size (may exceed D).
        hidden: decoder hidden sizes (code -> hidden... -> D).
        l1: lambda, the L1 penalty's weight: the prior is Laplace(0, 1 / lambda) per code unit;
            0 gives a flat (improper) prior, which cannot be sampled.
        likelihood: ``"bernoulli"`` (logits g(c)), ``"gaussian"`` (N(g(c), sigma^2 I)) or
            ``"continuous_bernoulli"``, as in :class:`models.VAE`.
        sigma: the Gaussian likelihood's fixed scale (default 1.0; gaussian only).
        activation: the decoder's hidden activation (a module class).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, code_dim: int, hidden: Sequence[int] = (200,), *,
                 l1: float = 0.0, likelihood: str = "bernoulli", sigma: float | None = None,
                 activation: type[nn.Module] = nn.ReLU, name: str | None = None):
        super().__init__(unique_name("sparse_autoencoder", name))
        if not float(l1) >= 0:
            raise ValueError(f"l1 (the Laplace prior's rate lambda) must be >= 0, got {l1}")
        if likelihood not in SPARSE_LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {SPARSE_LIKELIHOODS}, got {likelihood!r}")
        if sigma is not None and (likelihood != "gaussian" or not sigma > 0):
            raise ValueError(f"sigma is the gaussian likelihood's positive scale; got "
                             f"sigma={sigma} with likelihood={likelihood!r}")
        self.data_dim, self.code_dim, self.l1 = data_dim, code_dim, float(l1)
        self.likelihood = likelihood
        self.sigma = 1.0 if sigma is None else float(sigma)
        self.decoder = mlp([code_dim, *hidden, data_dim], activation)

    @property
    def latent_dim(self) -> int:
        """K, the code size (the name other models use for it)."""
        return self.code_dim

    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        """p(c) with batch shape [N] (N = like.shape[0]) and event shape [K]."""
        n = like.shape[0]
        if self.l1 == 0:
            return dist.ImproperUniform(constraints.real, (n,), (self.code_dim,))
        zeros = like.new_zeros(n, self.code_dim)  # [N, K]
        return dist.Laplace(zeros, 1.0 / self.l1).to_event(1)

    def observation(self, code: torch.Tensor) -> dist.TorchDistribution:
        """p(x | c) for codes ``[..., N, K]``: batch shape ``[..., N]``, event shape ``[D]``."""
        return decoder_likelihood(self.decoder(code), self.likelihood, self.sigma)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the code ``"z"`` from the prior and observe the flattened x under the decoder."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)  # [N, D]
        with pyro.plate("data", x.shape[0], dim=-1):
            code = pyro.sample("z", self.prior(flat))  # [..., N, K]
            pyro.sample("x", self.observation(code), obs=flat)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of ``num`` prior draws, ``[num, D]`` (probabilities for Bernoulli)."""
        if self.l1 == 0:
            raise ValueError("the flat prior of l1=0 is improper and cannot be sampled; give "
                             "the SparseAutoencoder l1 > 0 (a Laplace prior) to sample from it")
        p = next(self.decoder.parameters())
        u = torch.rand(num, self.code_dim, generator=generator, device=p.device, dtype=p.dtype)
        u = u.clamp(min=torch.finfo(p.dtype).eps) - 0.5  # [num, K] uniform on (-1/2, 1/2)
        code = -u.sign() * torch.log1p(-2 * u.abs()) / self.l1  # Laplace(0, 1/l1) by inversion
        with torch.no_grad():
            return self.observation(code).mean
