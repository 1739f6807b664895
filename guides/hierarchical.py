"""Guides for the two-layer hierarchical VAE (:class:`models.HierarchicalVAE`).

* :class:`BottomUpGuide`: q(z1 | x) q(z2 | z1), each a diagonal Gaussian from an MLP, the
  inference network of Burda, Grosse and Salakhutdinov (2016) for two stochastic layers.
* :class:`LadderGuide`: the ladder VAE's inference (Sønderby et al. 2016). A deterministic
  bottom-up pass d1 = f1(x), d2 = f2(d1) gives q(z2 | x) = N(mu2(d2), s2(d2)^2) and a bottom-up
  estimate N(m1(d1), t1(d1)^2) for z1; q(z1 | z2, x) combines it with the model's own top-down
  prior N(mu_p(z2), sigma_p(z2)^2) by precision weighting,

      sigma_q^-2 = t1^-2 + sigma_p^-2,   mu_q = sigma_q^2 (m1 t1^-2 + mu_p sigma_p^-2).

  The top-down network is the model's (shared parameters, registered under the model's name);
  the guide holds a reference to the model without owning it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["BottomUpGuide", "LadderGuide"]


def _gaussian(out: torch.Tensor, min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    loc, raw = out.chunk(2, dim=-1)
    return loc, nn.functional.softplus(raw) + min_scale


class BottomUpGuide(PyroModule):
    """q(z1 | x) q(z2 | z1) for latent sizes ``latent_dims = (K1, K2)``."""

    def __init__(self, data_dim: int, latent_dims: tuple[int, int] = (8, 2),
                 hidden: Sequence[int] = (200,), top_hidden: Sequence[int] = (64,), *,
                 name: str | None = None, min_scale: float = 1e-4):
        super().__init__(unique_name("bottom_up_guide", name))
        self.data_dim, (k1, k2), self.min_scale = data_dim, latent_dims, min_scale
        self.net1 = mlp([data_dim, *hidden, 2 * k1])
        self.net2 = mlp([k1, *top_hidden, 2 * k2], nn.Tanh)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z1"`` from q(z1 | x), then ``"z2"`` from q(z2 | z1), per datapoint."""
        flat = flatten_rows(x, self.data_dim, "BottomUpGuide")
        loc1, scale1 = _gaussian(self.net1(flat), self.min_scale)  # [N, K1] each
        with pyro.plate("data", x.shape[0], dim=-1):
            z1 = pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))  # [..., N, K1]
            loc2, scale2 = _gaussian(self.net2(z1), self.min_scale)  # [..., N, K2] each
            pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))


class LadderGuide(PyroModule):
    """Ladder inference q(z2 | x) q(z1 | z2, x) sharing the top-down network of ``model``.

    Args:
        model: the :class:`models.HierarchicalVAE` whose ``z1_prior`` gives the top-down term
            (any object with ``data_dim``, ``k1``, ``k2`` and ``z1_prior(z2) -> (loc, scale)``).
        hidden: sizes of the deterministic bottom-up layers d1 (x -> d1) and d2 (d1 -> d2).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, model, hidden: tuple[int, int] = (200, 64), *,
                 name: str | None = None, min_scale: float = 1e-4):
        super().__init__(unique_name("ladder_guide", name))
        # A plain reference, not a submodule: the model owns (and registers) its parameters.
        object.__setattr__(self, "_model", model)
        self.data_dim, self.min_scale = model.data_dim, min_scale
        h1, h2 = hidden
        self.up1 = nn.Sequential(nn.Linear(model.data_dim, h1), nn.ReLU())
        self.up2 = nn.Sequential(nn.Linear(h1, h2), nn.ReLU())
        self.head1 = nn.Linear(h1, 2 * model.k1)
        self.head2 = nn.Linear(h2, 2 * model.k2)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z2"`` from q(z2 | x), then ``"z1"`` from q(z1 | z2, x), per datapoint."""
        flat = flatten_rows(x, self.data_dim, "LadderGuide")
        d1 = self.up1(flat)  # [N, H1]
        d2 = self.up2(d1)  # [N, H2]
        loc2, scale2 = _gaussian(self.head2(d2), self.min_scale)  # [N, K2] each
        m1, t1 = _gaussian(self.head1(d1), self.min_scale)  # [N, K1] each
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))  # [..., N, K2]
            mu_p, sigma_p = self._model.z1_prior(z2)  # [..., N, K1] each
            prec_up, prec_p = t1.pow(-2), sigma_p.pow(-2)
            var = 1.0 / (prec_up + prec_p)  # [..., N, K1]
            loc1 = var * (m1 * prec_up + mu_p * prec_p)
            pyro.sample("z1", dist.Normal(loc1, var.sqrt()).to_event(1))
