"""Per-datapoint variational families with parameters shaped [N, ...], for local (non-amortized) VI.

Each family is a ``torch.nn.Module`` holding one set of parameters per datapoint (leading
dimension N) and returning a distribution over a flat latent vector with batch shape [N] and
event shape [K]:

* ``"diag"``: N(m_n, diag s_n^2), the mean-field Gaussian (Kingma and Welling 2014);
* ``"full"``: N(m_n, L_n L_n^T) with a lower-Cholesky L_n (positive diagonal via exp, kept
  apart from the strictly lower part so that the optimizer can give the two their own rates);
* ``"flow"``: a diagonal Gaussian pushed through per-datapoint affine autoregressive layers
  (inverse autoregressive flow, Kingma et al. 2016, with a linear conditioner per datapoint):

      y_i = z_i exp(s_i) + m_i,   s = c tanh((A_n z) / c),   m = B_n z,

  A_n, B_n strictly triangular (lower on even layers, upper on odd ones), so the Jacobian is
  triangular with log-determinant sum_i s_i. With A = 0 one layer maps the diagonal base onto
  any full-covariance Gaussian (L D^{1/2} factorization), so the flow family contains the
  full-covariance one; A != 0 makes it non-Gaussian. Layers are vectorized over datapoints
  and particles; the inverse (only needed to score points the flow did not produce) loops over
  the K latent dimensions.

Initialization: :func:`gaussian_moments` / :func:`guide_moments` read the mean and Cholesky
factor of a Gaussian guide exactly; :func:`sampled_moments` moment-matches any other guide (or
the prior) from samples.

These are the q* families of Cremer, Li and Duvenaud (2018), "Inference suboptimality in
variational autoencoders".
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from ...core.trace import particle_groups, trace_fn

__all__ = [
    "FAMILIES", "LocalAutoregressive", "LocalFamily", "PathDerivative", "gaussian_moments",
    "guide_moments", "sampled_moments",
]

FAMILIES = ("diag", "full", "flow")

_LOG_SCALE_CLIP = 4.0  # soft bound on each layer's log-scale, |s_i| < 4


def _masks(k: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ones = torch.ones(k, k, device=device, dtype=dtype)
    return torch.tril(ones, -1), torch.triu(ones, 1)  # [K, K] each


class LocalAutoregressive(Transform):
    """Per-datapoint affine autoregressive layers with linear conditioners (see module doc).

    ``log_scale_weight`` and ``shift_weight`` are ``[N, L, K, K]``; inputs ``[..., N, K]``.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True
    sign = +1

    def __init__(self, log_scale_weight: torch.Tensor, shift_weight: torch.Tensor,
                 cache_size: int = 1):
        super().__init__(cache_size=cache_size)
        self.log_scale_weight, self.shift_weight = log_scale_weight, shift_weight
        self.num_layers, k = log_scale_weight.shape[1], log_scale_weight.shape[-1]
        self._lower, self._upper = _masks(k, log_scale_weight.device, log_scale_weight.dtype)

    def _conditioner(self, z: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self._lower if layer % 2 == 0 else self._upper
        a = self.log_scale_weight[:, layer] * mask  # [N, K, K]
        b = self.shift_weight[:, layer] * mask  # [N, K, K]
        zc = z.unsqueeze(-1)  # [..., N, K, 1]
        s = (a @ zc).squeeze(-1)  # [..., N, K]
        s = _LOG_SCALE_CLIP * torch.tanh(s / _LOG_SCALE_CLIP)
        return s, (b @ zc).squeeze(-1)

    def _forward_with_logdet(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = z.new_zeros(z.shape[:-1])  # [..., N]
        for layer in range(self.num_layers):
            s, m = self._conditioner(z, layer)
            z = z * s.exp() + m
            logdet = logdet + s.sum(-1)
        return z, logdet

    def _call(self, z):
        return self._forward_with_logdet(z)[0]

    def _inverse(self, y):
        k = y.shape[-1]
        eye = torch.eye(k, device=y.device, dtype=y.dtype)
        for layer in reversed(range(self.num_layers)):
            z = torch.zeros_like(y)
            order = range(k) if layer % 2 == 0 else reversed(range(k))
            for i in order:  # entry i depends only on entries already solved
                s, m = self._conditioner(z, layer)
                z = z + eye[i] * ((y[..., i] - m[..., i]) * torch.exp(-s[..., i])).unsqueeze(-1)
            y = z
        return y

    def log_abs_det_jacobian(self, x, y):
        """The log |det J| of the forward map at ``x``."""
        return self._forward_with_logdet(x)[1]


class LocalFamily(nn.Module):
    """One variational family over a flat latent ``[N, K]``, initialized at given moments.

    Args:
        family: one of :data:`FAMILIES`.
        loc: ``[N, K]`` initial mean.
        scale_tril: ``[N, K, K]`` initial Cholesky factor of the covariance (diagonal families
            keep only its diagonal; the flow starts at this Gaussian exactly).
        num_flows: flow layers (``"flow"`` only).
    """

    def __init__(self, family: str, loc: torch.Tensor, scale_tril: torch.Tensor,
                 num_flows: int = 2):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if num_flows < 1:
            raise ValueError(f"num_flows must be >= 1, got {num_flows}")
        n, k = loc.shape
        self.family, self.num_data, self.dim = family, n, k
        diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1)  # [N, K]
        if family == "full":  # L = strictly lower part + diag(exp(log_scale))
            self.loc = nn.Parameter(loc.detach().clone())
            self.log_scale = nn.Parameter(diag.log().detach().clone())  # [N, K]
            self.tril_off = nn.Parameter(torch.tril(scale_tril, -1).detach().clone())  # [N, K, K]
        elif family == "diag":
            self.loc = nn.Parameter(loc.detach().clone())
            self.log_scale = nn.Parameter(diag.log().detach().clone())
        else:  # L = (I + B) D^{1/2}: base N(m0, D), first layer y = (I + B) z, m = (I + B) m0
            unit = scale_tril / diag.unsqueeze(-2)  # [N, K, K] unit lower triangular
            m0 = torch.linalg.solve_triangular(unit, loc.unsqueeze(-1), upper=False,
                                               unitriangular=True).squeeze(-1)  # [N, K]
            shift = torch.zeros(n, num_flows, k, k, dtype=loc.dtype, device=loc.device)
            shift[:, 0] = torch.tril(unit, -1)
            self.loc = nn.Parameter(m0.detach().clone())
            self.log_scale = nn.Parameter(diag.log().detach().clone())
            self.shift_weight = nn.Parameter(shift)  # [N, L, K, K]
            self.log_scale_weight = nn.Parameter(torch.zeros_like(shift))  # [N, L, K, K]

    def distribution(self, detach: bool = False) -> dist.TorchDistribution:
        """q_n over the flat latent: batch shape [N], event shape [K].

        ``detach=True`` builds it from detached parameters (for the path-derivative gradient).
        """
        p = {name: (v.detach() if detach else v) for name, v in self.named_parameters()}
        if self.family == "full":
            tril = torch.tril(p["tril_off"], -1) + torch.diag_embed(p["log_scale"].exp())
            return dist.MultivariateNormal(p["loc"], scale_tril=tril)
        base = dist.Normal(p["loc"], p["log_scale"].exp()).to_event(1)
        if self.family == "diag":
            return base
        flow = LocalAutoregressive(p["log_scale_weight"], p["shift_weight"])
        return dist.TransformedDistribution(base, [flow])


class PathDerivative(dist.TorchDistribution):
    """Samples from ``q`` (reparameterized) but scores with ``q_detached``.

    This is the "sticking the landing" gradient of Roeder, Wu and Duvenaud (2017), which drops
    the score term whose expectation is zero, so the gradient's variance vanishes where q equals
    the posterior.
    """

    arg_constraints: dict = {}  # noqa: RUF012 (torch's class attribute)
    has_rsample = True

    def __init__(self, q: dist.TorchDistribution, q_detached: dist.TorchDistribution):
        self.q, self.q_detached = q, q_detached
        super().__init__(q.batch_shape, q.event_shape, validate_args=False)

    @property
    def support(self):
        """The support of ``q``."""
        return self.q.support

    def expand(self, batch_shape, _instance=None):
        """The same pair of distributions with batch shape ``batch_shape``."""
        return PathDerivative(self.q.expand(batch_shape), self.q_detached.expand(batch_shape))

    def rsample(self, sample_shape=()):
        """Reparameterized draws from ``q``."""
        return self.q.rsample(sample_shape)

    def sample(self, sample_shape=()):
        """Draws from ``q`` without gradients."""
        with torch.no_grad():
            return self.q.rsample(sample_shape)

    def log_prob(self, value):
        """Log density of ``value`` under ``q_detached``."""
        return self.q_detached.log_prob(value)


def gaussian_moments(q, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mean [N, K] and Cholesky factor [N, K, K] of a Gaussian q with batch [N], event [K].

    q is a full-covariance or an independent-Normal Gaussian; any other distribution gives None.
    """
    if isinstance(q, torch.distributions.MultivariateNormal):
        return q.loc.expand(n, k), q.scale_tril.expand(n, k, k)
    if (isinstance(q, torch.distributions.Independent) and q.reinterpreted_batch_ndims == 1
            and isinstance(q.base_dist, torch.distributions.Normal)):
        base = q.base_dist
        return base.loc.expand(n, k), torch.diag_embed(base.scale.expand(n, k))
    return None


def sampled_moments(fn, x, sites, num_samples: int, particle_dim: int, kwargs,
                    vectorized: bool = True):
    """Mean [N, K] and Cholesky [N, K, K] of each latent site's unconstrained samples under fn.

    The sites are :class:`ppvae.core.sites.LatentSite` records; ``vectorized=False`` draws the
    samples one trace at a time (a pair that does not broadcast over particles).
    """
    with torch.no_grad():
        traces = [(trace_fn(fn, x, kwargs, particles=g, particle_dim=particle_dim), g or 1)
                  for g in particle_groups(num_samples, vectorized)]
    n, out = int(x.shape[0]), []
    for site in sites:
        parts = []
        for tr, k in traces:
            v = tr.nodes[site.name]["value"]
            assert v is not None  # the traced sample
            if not site.is_real:
                v = site.transform.inv(v)
            parts.append(v.reshape(k, n, site.size))  # [k, N, K]
        v = torch.cat(parts, dim=0)  # [S, N, K]
        mean = v.mean(0)  # [N, K]
        c = v - mean
        cov = torch.einsum("sni,snj->nij", c, c) / (num_samples - 1)  # [N, K, K]
        jitter = 1e-6 * cov.diagonal(0, -2, -1).mean(-1).clamp(min=1e-12)  # [N]
        eye = torch.eye(site.size, dtype=v.dtype, device=v.device)
        out.append((mean, torch.linalg.cholesky(cov + jitter[:, None, None] * eye)))
    return out


def guide_moments(guide, x, sites):
    """Exact moments from ``guide.distribution(x)`` when it is a Gaussian; else None."""
    if not hasattr(guide, "distribution") or len(sites) != 1 or not sites[0].is_real:
        return None
    with torch.no_grad():
        m = gaussian_moments(guide.distribution(x), int(x.shape[0]), sites[0].size)
    return None if m is None else [m]
