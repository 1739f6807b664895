"""Sparse-coding encoder: a point mass at an overcomplete, sparse code c = act(f(x)).

The recognition half of a sparse autoencoder (:class:`models.SparseAutoencoder`). The code may be
overcomplete (code size K larger than the data size D); what keeps it from copying the input is
sparsity, obtained in one of three ways:

* ``activation="relu"`` with an L1 penalty, written in the model as a Laplace prior on the code
  (the sparse coding model of Olshausen and Field 1996; :class:`models.SparseAutoencoder`);
* ``activation="sigmoid"`` with the KL-to-target-rate penalty of Ng's sparse autoencoder notes
  (the rate penalty of Lee, Ekanadham and Ng 2008), a batch-level training objective:
  :func:`ppvae.train.sparsity.sparsity_kl`;
* ``k`` set: the k-sparse autoencoder of Makhzani and Frey (2014). The k largest entries of the
  linear code f(x) are kept and the rest set to zero, so every code has exactly k non-zeros;
  gradients flow through the kept entries only (the selection itself is piecewise constant).
  The kept values are the linear ones (``activation="linear"``, the paper's choice and the
  default with ``k``) or their sigmoid (``"sigmoid"``, strictly positive, so still exactly k
  non-zeros); ``"relu"`` is refused with ``k``, as it would zero kept units with a negative
  linear value.

As for :class:`guides.DeltaEncoder`, q(z | x) is a point mass, so the "ELBO" ppvae reports for
the pair is the training objective log p(x, c(x)), not a bound on log p(x); see
:mod:`models.sparse_autoencoder`. :func:`ppvae.analysis.sparsity.code_sparsity` measures how
sparse the codes are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import flatten_rows, mlp, unique_name

__all__ = ["CODE_ACTIVATIONS", "SparseEncoder"]

CODE_ACTIVATIONS = ("relu", "sigmoid", "linear")

_RANGES = {"relu": (0.0, math.inf), "sigmoid": (0.0, 1.0), "linear": (-math.inf, math.inf)}


def _resolve_activation(activation: str | None, k: int | None, code_dim: int) -> str:
    """The code activation: checked, with the default for the top-k variant (linear)."""
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= code_dim:
            raise ValueError(f"k (the number of non-zero code units) must be an integer in "
                             f"1..code_dim={code_dim}, got {k!r}")
    if activation is None:
        return "relu" if k is None else "linear"
    if activation not in CODE_ACTIVATIONS:
        raise ValueError(f"activation must be one of {CODE_ACTIVATIONS}, got {activation!r}")
    if k is not None and activation == "relu":
        raise ValueError("activation='relu' with k would zero kept units whose linear value is "
                         "negative, leaving fewer than k non-zeros; use activation='linear' (the "
                         "k-sparse autoencoder of Makhzani and Frey 2014) or 'sigmoid'")
    return activation


class SparseEncoder(PyroModule):
    """Point-mass encoder at a sparse code: x [N, ...] -> delta at c(x) [N, K].

    Args:
        data_dim: flattened input size D.
        code_dim: code size K (may exceed D: an overcomplete code).
        hidden: hidden layer sizes of the MLP f (``()``: one linear layer, as in Makhzani and
            Frey 2014).
        activation: the code's activation: ``"relu"`` (non-negative codes, for an L1 / Laplace
            prior), ``"sigmoid"`` (codes in (0, 1), for the KL-to-target-rate penalty) or
            ``"linear"``; default ``"relu"``, or ``"linear"`` when ``k`` is set.
        k: keep only the k largest entries of the linear code per datapoint (top-k).
        hidden_activation: the MLP's hidden activation (a module class).
        latent: the latent site name the model uses.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, code_dim: int, hidden: Sequence[int] = (200,), *,
                 activation: str | None = None, k: int | None = None,
                 hidden_activation: type[nn.Module] = nn.ReLU, latent: str = "z",
                 name: str | None = None):
        super().__init__(unique_name("sparse_encoder", name))
        self.activation = _resolve_activation(activation, k, code_dim)
        self.data_dim, self.code_dim, self.k, self.latent = data_dim, code_dim, k, latent
        self.net = mlp([data_dim, *hidden, code_dim], hidden_activation)

    @property
    def latent_dim(self) -> int:
        """K, the code size (the name other guides use for it)."""
        return self.code_dim

    @property
    def code_range(self) -> tuple[float, float]:
        """The interval the code values lie in: ``(0, 1)`` for sigmoid codes, and so on."""
        return _RANGES[self.activation]  # the zeros of top-k lie in each of them

    def _act(self, a: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return torch.relu(a)
        if self.activation == "sigmoid":
            return torch.sigmoid(a)
        return a

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code c(x), ``[N, K]``; with ``k``, exactly k non-zero entries per row."""
        flat = flatten_rows(x, self.data_dim, type(self).__name__)  # [N, D]
        a = self.net(flat)  # [N, K] the linear code
        if self.k is None:
            return self._act(a)
        kept, idx = a.topk(self.k, dim=-1)  # [N, k] each
        return torch.zeros_like(a).scatter(-1, idx, self._act(kept))  # [N, K]

    def distribution(self, x: torch.Tensor) -> dist.Delta:
        """q(c | x_n): a point mass with batch shape [N] and event shape [K]."""
        return dist.Delta(self.encode(x), event_dim=1)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the latent at the code c(x) inside the ``"data"`` plate."""
        q = self.distribution(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
