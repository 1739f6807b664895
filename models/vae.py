"""The variational autoencoder's generative model (Kingma and Welling 2014) as a Pyro model.

    z_n ~ N(0, I_K),    x_n | z_n ~ p(x | f(z_n)),    f an MLP decoder,

with the likelihood p(x | f(z)) one of

* ``"bernoulli"``: Bernoulli with logits f(z) (binary or binarized images),
* ``"gaussian"``: N(f(z), sigma^2 I) with sigma fixed or learned (one shared scale),
* ``"continuous_bernoulli"``: the continuous Bernoulli of Loaiza-Ganem and Cunningham (2019)
  with logits f(z), the normalized likelihood for grey levels in [0, 1].

The likelihood is stated once, as the observed site ``"x"``. Images of any shape are flattened
inside the model (``x.reshape(N, -1)``). :attr:`VAE.guide` is the usual amortized
diagonal-Gaussian encoder (:class:`guides.MLPEncoder`), a child module with its own parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn
from torch.distributions import constraints

from ..guides.mlp import MLPEncoder
from ..nn import flatten_rows, mlp, unique_name

__all__ = ["LIKELIHOODS", "VAE", "decoder_likelihood"]

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")



def decoder_likelihood(out: torch.Tensor, likelihood: str, sigma=None) -> dist.TorchDistribution:
    """p(x | z) with event shape ``[D]`` from a decoder output ``out`` ``[..., N, D]``.

    ``likelihood`` is one of :data:`LIKELIHOODS`: Bernoulli or continuous Bernoulli with
    logits ``out``, or a Gaussian with mean ``out`` and scale ``sigma``.
    """
    if likelihood == "bernoulli":
        return dist.Bernoulli(logits=out).to_event(1)
    if likelihood == "continuous_bernoulli":
        return dist.ContinuousBernoulli(logits=out).to_event(1)
    return dist.Normal(out, sigma).to_event(1)

class VAE(PyroModule):
    """VAE model ``model(x)`` with an MLP decoder; ``vae.guide`` is its MLP encoder.

    Args:
        data_dim: D, the flattened size of one datapoint.
        latent_dim: K.
        hidden: decoder hidden layer sizes (latent -> hidden... -> D).
        likelihood: one of :data:`LIKELIHOODS`.
        sigma: Gaussian likelihood scale: the fixed value, or the initial value when
            ``learn_sigma`` (default 1.0).
        learn_sigma: learn the Gaussian scale (constrained positive, floored at ``min_sigma``).
        encoder_hidden: encoder hidden sizes (default: ``hidden`` reversed).
        activation: hidden activation of both networks.
        name: Pyro parameter-store prefix (default: a fresh one per instance).
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (200,),
        *,
        likelihood: str = "bernoulli",
        sigma: float | None = None,
        learn_sigma: bool = False,
        min_sigma: float = 1e-3,
        encoder_hidden: Sequence[int] | None = None,
        activation: type[nn.Module] = nn.ReLU,
        name: str | None = None,
    ):
        name = unique_name("vae", name)
        super().__init__(name)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got '{likelihood}'")
        if likelihood != "gaussian" and (sigma is not None or learn_sigma):
            raise ValueError(f"sigma / learn_sigma apply to the gaussian likelihood, not "
                             f"'{likelihood}'")
        if sigma is not None and sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.data_dim, self.latent_dim, self.likelihood = data_dim, latent_dim, likelihood
        self.min_sigma = min_sigma
        self.decoder = mlp([latent_dim, *hidden, data_dim], activation)
        if likelihood == "gaussian":
            s = torch.tensor(1.0 if sigma is None else float(sigma))
            if learn_sigma:
                self.sigma = PyroParam(s, constraint=constraints.greater_than(min_sigma))
            else:
                self.register_buffer("sigma", s)
        enc_hidden = tuple(reversed(hidden)) if encoder_hidden is None else tuple(encoder_hidden)
        self.guide = MLPEncoder(data_dim, latent_dim, enc_hidden, activation=activation,
                                name=f"{name}_encoder")

    def observation(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) for latents ``[..., N, K]``: batch shape ``[..., N]``, event shape ``[D]``."""
        return self._likelihood(self.decoder(z))

    def _likelihood(self, out: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) from the decoder output ``[..., N, D]``."""
        sigma = self.sigma if self.likelihood == "gaussian" else None  # only a Gaussian has one
        return decoder_likelihood(out, self.likelihood, sigma)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z"`` from N(0, I) and observe the flattened x under the likelihood."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)  # [N, D]
        decoder = self.decoder  # registered with Pyro here, outside the plate: fewer messages
        prior = dist.Normal(flat.new_zeros(self.latent_dim), 1.0).to_event(1)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", prior)  # [..., N, K]
            pyro.sample("x", self._likelihood(decoder(z)), obs=flat)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of ``num`` prior draws, ``[num, D]`` (probabilities for Bernoulli)."""
        dev = next(self.decoder.parameters()).device
        z = torch.randn(num, self.latent_dim, generator=generator, device=dev)
        with torch.no_grad():
            return self.observation(z).mean
