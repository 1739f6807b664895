"""The plain autoencoder as the zero-variance limit of a VAE: a decoder model with a delta guide.

    z_n ~ p(z),    x_n | z_n ~ Bernoulli(logits = g(z_n)),    q(z | x) = delta(z - f(x)).

With the point-mass guide :class:`guides.DeltaEncoder`, the ELBO estimator Pyro trains
(``Trace_ELBO``) is ``log p(x_n | f(x_n)) + log p(f(x_n))``. With ``prior="flat"`` (an improper
uniform prior, log density 0) that is the reconstruction log-likelihood, i.e. the classical
autoencoder trained by maximum likelihood (binary cross-entropy; Vincent et al. 2010 for the
reconstruction-likelihood view); with ``prior="normal"`` it is the MAP objective of a
regularized autoencoder. Either way the model keeps the ppvae contract, so it trains with the
same fit loop and its reconstructions, latent scatter and interpolations use the same plots.

Which ppvae analyses apply: reconstruction and latent-space figures; the "ELBO" that ppvae
reports is the training objective above, *not* a lower bound on log p(x) (a point mass over a
continuous latent has entropy minus infinity), and IWAE_k equals it for every k because all
particles coincide. With ``prior="flat"`` the prior cannot be sampled, so prior samples, the
latent manifold and KL diagnostics raise a clear error. Use a VAE for log-likelihoods.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch.distributions import constraints

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["PRIORS", "Autoencoder"]

PRIORS = ("flat", "normal")


class Autoencoder(PyroModule):
    """Decoder model ``model(x)`` with latent ``"z"`` [N, K] and observed ``"x"`` (Bernoulli).

    Args:
        data_dim: D (flattened).
        latent_dim: K.
        hidden: decoder hidden sizes.
        prior: ``"flat"`` (improper uniform: the maximum-likelihood autoencoder) or
            ``"normal"`` (N(0, I): the MAP / regularized autoencoder).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,), *,
                 prior: str = "flat", name: str | None = None):
        super().__init__(unique_name("autoencoder", name))
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        self.data_dim, self.latent_dim, self.prior_kind = data_dim, latent_dim, prior
        self.decoder = mlp([latent_dim, *hidden, data_dim])

    def prior(self, like: torch.Tensor) -> dist.TorchDistribution:
        """p(z) with batch shape [N] (N = like.shape[0]) and event shape [K]."""
        n = like.shape[0]
        if self.prior_kind == "flat":
            return dist.ImproperUniform(constraints.real, (n,), (self.latent_dim,))
        return dist.Normal(like.new_zeros(n, self.latent_dim), 1.0).to_event(1)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z"`` from the prior and observe the flattened x under the decoder."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)  # [N, D]
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior(flat))  # [..., N, K]
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=flat)
