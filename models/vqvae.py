"""VQ-VAE (van den Oord, Vinyals and Kavukcuoglu 2017) as a Pyro model with an honest density.

Each datapoint has P latent positions; each takes one of the K rows of a codebook E [K, C]:

    z_n = (e_{k_n1}, ..., e_{k_nP}),  k_np ~ Uniform{1..K},    x_n | z_n ~ Bernoulli(g(z_n)).

The latent site ``"z"`` holds the chosen code vectors ``[N, P, C]`` under
:class:`UniformCodebook` (a discrete distribution over the codebook's rows, log density
-P log K). :class:`guides.VQEncoder` is the deterministic nearest-code posterior
q(z | x) = delta(quantize(f(x))), a point mass on a *discrete* set (log q = 0, exact), with the
straight-through estimator z_e + sg(e - z_e) carrying gradients to the encoder. It adds the
codebook loss ||sg(z_e) - e||^2 (absent with ``ema=True``: exponential-moving-average codebook
updates, paper appendix A.1) and the commitment loss beta ||z_e - sg(e)||^2 to Pyro's training
objective as a guide factor, which ppvae's per-datapoint log weights do not include. Training
objectives count guide factors as Pyro's ``Trace_ELBO`` does (``ppvae.fit``'s default ``ELBO``
and ``ppvae.PyroObjective(pyro.infer.Trace_ELBO())`` alike).

Which ppvae analyses apply:
* ELBO = log p(x | z_q) - P log K is a true lower bound on log p(x) under the uniform code
  prior (the paper's section 3.1); ``ppvae.elbo`` and ``ppvae.iwae`` report it, with IWAE_k equal
  to it for every k (the guide is deterministic, so importance sampling cannot tighten it).
* Reconstructions and prior sample grids (codes drawn uniformly; the paper fits an
  autoregressive prior afterwards, which this model does not include).
* Not applicable, and raising a clear error (the latent is discrete: the model's site reports
  ``support.is_discrete``): the 2-D latent manifold, interpolations and traversals, KL per
  latent dimension and active units, and every analysis that moves z continuously (local
  Gaussian VI, HMC, AIS); see :meth:`ppvae.PairInfo.require_continuous`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch import nn
from torch.distributions import constraints

from ..nn import mlp, unique_name

__all__ = ["VQVAE", "UniformCodebook"]


class _CodebookSupport(constraints.Constraint):
    """The rows of a codebook, per position: a discrete set of vectors."""

    is_discrete = True
    event_dim = 2

    def __init__(self, codebook: torch.Tensor, tol: float):
        super().__init__()
        self.codebook, self.tol = codebook, tol

    def check(self, value: torch.Tensor) -> torch.Tensor:
        gap = (value.unsqueeze(-2) - self.codebook).abs().amax(-1)  # [..., P, K]
        return (gap.amin(-1) <= self.tol).all(-1)  # [...]


class UniformCodebook(TorchDistribution):
    """Uniform distribution over codebook rows at each of P positions: event shape [P, C].

    ``log_prob`` is -P log K for values whose every position is a codebook row (within ``tol``,
    relative to the codebook's scale) and -inf otherwise.
    """

    arg_constraints: ClassVar[dict] = {}
    has_rsample = False

    def __init__(self, codebook: torch.Tensor, num_positions: int, batch_shape=(),
                 validate_args=None, tol: float = 1e-4):
        self.codebook, self.num_positions, self.tol = codebook, num_positions, tol
        event_shape = torch.Size((num_positions, codebook.shape[-1]))
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        """The codebook's rows at each position (within a tolerance relative to its scale)."""
        scale = float(self.codebook.detach().abs().max()) + 1.0
        return _CodebookSupport(self.codebook.detach(), self.tol * scale)

    def expand(self, batch_shape, _instance=None):
        """The same distribution with batch shape ``batch_shape``."""
        return UniformCodebook(self.codebook, self.num_positions, batch_shape, tol=self.tol)

    def sample(self, sample_shape=()) -> torch.Tensor:
        """Uniformly drawn codebook rows, ``[*sample_shape, *batch_shape, P, C]``."""
        shape = torch.Size(sample_shape) + self.batch_shape + (self.num_positions,)
        idx = torch.randint(self.codebook.shape[0], shape, device=self.codebook.device)
        return self.codebook.detach()[idx]  # [*shape, C]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """-P log K where every position of ``value`` is a codebook row, -inf elsewhere."""
        inside = self.support.check(value)  # [...]
        lp = -self.num_positions * math.log(self.codebook.shape[0])
        out = torch.where(inside, lp, -math.inf).to(value.dtype)
        return out.expand(torch.broadcast_shapes(out.shape, self.batch_shape))


class VQVAE(PyroModule):
    """VQ-VAE model ``model(x)``: latent ``"z"`` [N, P, C] (code vectors), observed ``"x"``.

    Args:
        data_dim: D (flattened).
        num_codes: K, the codebook size.
        code_dim: C, the size of one code vector.
        num_positions: P, latent positions per datapoint.
        hidden: decoder hidden sizes.
        ema: update the codebook by exponential moving averages (a buffer) instead of by
            gradients of the codebook loss.
        decay: EMA decay.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, num_codes: int = 16, code_dim: int = 4,
                 num_positions: int = 4, hidden: Sequence[int] = (200,), *, ema: bool = False,
                 decay: float = 0.99, name: str | None = None):
        super().__init__(unique_name("vqvae", name))
        self.data_dim, self.num_codes, self.code_dim = data_dim, num_codes, code_dim
        self.num_positions, self.ema, self.decay = num_positions, ema, decay
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.decoder = mlp([num_positions * code_dim, *hidden, data_dim])

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes for encodings ``[N, P, C]``: indices ``[N, P]`` and codes ``[N, P, C]``."""
        book = self.codebook  # [K, C]
        d2 = (z_e.unsqueeze(-2) - book).pow(2).sum(-1)  # [N, P, K]
        idx = d2.argmin(-1)  # [N, P]
        return idx, book[idx]

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, idx: torch.Tensor, eps: float = 1e-5) -> None:
        """One EMA step of the codebook towards the mean encoding assigned to each code."""
        onehot = nn.functional.one_hot(idx.reshape(-1), self.num_codes).to(z_e.dtype)  # [M, K]
        count = onehot.sum(0)  # [K]
        total = onehot.T @ z_e.reshape(-1, self.code_dim)  # [K, C]
        self.ema_count.mul_(self.decay).add_(count, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(total, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + eps) / (n + self.num_codes * eps) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the codes ``"z"`` uniformly and observe the flattened x given them."""
        flat = x.reshape(x.shape[0], -1)  # [N, D]
        if flat.shape[1] != self.data_dim:
            raise ValueError(f"VQVAE expects {self.data_dim} features per datapoint, got x of "
                             f"shape {tuple(x.shape)}")
        book = self.codebook
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", UniformCodebook(book, self.num_positions))  # [..., N, P, C]
            logits = self.decoder(z.flatten(-2))  # [..., N, D]
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=flat)
