"""Bayesian VAE: a prior over the decoder's weights, a global guide for them, one for z.

A Gaussian prior over the decoder's weights, a global mean-field guide for them and an amortized
guide for z (Kingma and Welling 2014, appendix F, "full VB"; Blundell et al. 2015 for the weight
posterior):

    W ~ N(0, s^2 I)  (every decoder weight and bias, ``PyroSample``),
    z_n ~ N(0, I_K),    x_n | z_n, W ~ Bernoulli(logits = g_W(z_n)),

trained with :class:`WeightGuide` (q(W) = N(m, diag v), global) followed by an amortized
encoder for z (:meth:`BayesianVAE.guide_with`). ``num_data`` (the training-set size) scales the
data plate so minibatch ELBOs weigh the KL of W once per epoch.

Which ppvae analyses apply: the weights are global latents (outside the data plate), so the
marginal log p(x) = log E_W[prod_n p(x_n | W)] does not split per datapoint and
:func:`ppvae.check_pair` rejects the full pair (the error points to ``ppvae.fix_globals``).
Every per-datapoint analysis (ELBO, IWAE, gaps, AIS/MCMC over z, all figures) applies to the
*conditional* model at fixed weights: :meth:`BayesianVAE.at` returns that model for W = the
guide's mean (``how="mean"``) or one draw (``how="sample"``), and the numbers mean
"log p(x | W = w)", not the Bayesian marginal. Training uses Pyro's SVI on the full pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, PyroSample
from torch import nn
from torch.distributions import constraints

from ..core.globals import fix_globals, global_values
from ..nn import unique_name

__all__ = ["BayesianVAE", "WeightGuide"]


def _bayesian_linear(fan_in: int, fan_out: int, prior_scale: float) -> PyroModule:
    layer = PyroModule[nn.Linear](fan_in, fan_out)
    init_w, init_b = layer.weight.detach().clone(), layer.bias.detach().clone()
    del layer.weight, layer.bias
    layer.register_buffer("init_weight", init_w)  # the usual nn.Linear init, for the guide
    layer.register_buffer("init_bias", init_b)
    layer.weight = PyroSample(
        lambda m: dist.Normal(torch.zeros_like(m.init_weight), prior_scale).to_event(2))
    layer.bias = PyroSample(
        lambda m: dist.Normal(torch.zeros_like(m.init_bias), prior_scale).to_event(1))
    return layer


class BayesianVAE(PyroModule):
    """Model ``model(x)`` with global weight sites and a local latent ``"z"`` [N, K].

    Args:
        data_dim: D (flattened).
        latent_dim: K.
        hidden: decoder hidden sizes.
        prior_scale: s, the prior standard deviation of every weight.
        num_data: training-set size for minibatch scaling (None: the batch is the data set).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (200,), *,
                 prior_scale: float = 1.0, num_data: int | None = None, name: str | None = None):
        super().__init__(unique_name("bvae", name))
        self.data_dim, self.latent_dim, self.num_data = data_dim, latent_dim, num_data
        sizes = [latent_dim, *hidden, data_dim]
        self.layers = PyroModule[nn.ModuleList](
            [_bayesian_linear(a, b, prior_scale) for a, b in itertools.pairwise(sizes)])

    def weight_sites(self) -> list[tuple[str, torch.Tensor, int]]:
        """(site name, initial value, event dims) of every weight site, in sampling order."""
        out = []
        for i, layer in enumerate(self.layers):
            out.append((f"{self._pyro_name}.layers.{i}.weight", layer.init_weight, 2))
            out.append((f"{self._pyro_name}.layers.{i}.bias", layer.init_bias, 1))
        return out

    def weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of every layer; sampled (once per call) when the model runs."""
        return [(layer.weight, layer.bias) for layer in self.layers]

    @staticmethod
    def logits(z: torch.Tensor, weights: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Decoder logits for latents ``[..., N, K]`` at the given weights."""
        h = z
        for i, (w, b) in enumerate(weights):
            h = nn.functional.linear(h, w, b)  # [..., N, H_i]
            if i < len(weights) - 1:
                h = nn.functional.relu(h)
        return h

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the decoder weights (global), then ``"z"`` and the observed x per datapoint."""
        flat = x.reshape(x.shape[0], -1)  # [N, D]
        if flat.shape[1] != self.data_dim:
            raise ValueError(f"BayesianVAE expects {self.data_dim} features per datapoint, got "
                             f"x of shape {tuple(x.shape)}")
        weights = self.weights()  # global sites: outside the data plate
        n = x.shape[0]
        size = max(self.num_data or n, n)
        with pyro.plate("data", size, subsample=torch.arange(n, device=flat.device), dim=-1):
            z = pyro.sample("z", dist.Normal(flat.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.logits(z, weights)).to_event(1),
                        obs=flat)

    def guide_with(self, weight_guide: WeightGuide, encoder: Callable) -> Callable:
        """The full guide for training: q(W) then the amortized q(z | x)."""
        def guide(x, **kwargs):
            weight_guide(x, **kwargs)
            encoder(x, **kwargs)

        return guide

    def at(self, weight_guide: WeightGuide, x: torch.Tensor | None = None,
           how: str = "mean") -> Callable:
        """The conditional model p(x, z | W = w) with w the weight guide's mean or one draw.

        ``how="mean"`` follows the guide's current means at every call (no ``x`` needed);
        ``how="sample"`` fixes one draw from q(W), made now (tracing the guide on ``x``). The
        result keeps the ppvae contract: pair it with the encoder for per-datapoint analyses.
        """
        if how == "mean":
            return fix_globals(self, weight_guide.means)
        if x is None:
            raise ValueError("BayesianVAE.at(how='sample') needs a batch x to trace the guide on")
        return fix_globals(self, global_values(weight_guide, x, how=how))


class WeightGuide(PyroModule):
    """Mean-field Gaussian q(W) over every weight site of a :class:`BayesianVAE` (global).

    Means start at the decoder's usual ``nn.Linear`` initialization, standard deviations at
    ``init_scale``.
    """

    def __init__(self, model: BayesianVAE, *, init_scale: float = 1e-3,
                 name: str | None = None):
        super().__init__(unique_name("bvae_weights", name))
        self.sites = [(site, event_dim) for site, _, event_dim in model.weight_sites()]
        for i, (_, init, _) in enumerate(model.weight_sites()):
            setattr(self, f"loc_{i}", PyroParam(init.clone()))
            setattr(self, f"scale_{i}", PyroParam(torch.full_like(init, init_scale),
                                                  constraint=constraints.positive))

    def means(self) -> dict[str, torch.Tensor]:
        """The current mean of every weight site, ``{site: tensor}`` (detached)."""
        return {site: getattr(self, f"loc_{i}").detach() for i, (site, _) in enumerate(self.sites)}

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample every weight site from its mean-field Gaussian q(W)."""
        for i, (site, event_dim) in enumerate(self.sites):
            loc, scale = getattr(self, f"loc_{i}"), getattr(self, f"scale_{i}")
            pyro.sample(site, dist.Normal(loc, scale).to_event(event_dim))
