"""Posterior-collapse diagnostics: KL per latent dimension and the active-unit count.

For a latent site z with K dimensions, a guide q(z | x) and the model's prior p(z) (or
conditional prior p(z | parents), e.g. the lower layer of a hierarchical VAE):

* KL per dimension: the data average of KL(q(z_d | x) || p(z_d)), computed in closed form for
  the one-dimensional Gaussian marginals of diagonal or full-covariance Gaussian q and p
  (averaged over draws of the site's parents when p is conditional). Dimensions with KL near
  zero carry no information about x: the posterior has collapsed onto the prior
  (Bowman et al. 2016; Lucas et al. 2019).
* Activity A_d = Var_x(E_q[z_d | x]) and the active-unit count #{d: A_d > 0.01}, the
  criterion of Burda, Grosse and Salakhutdinov (2016, section 5.2).

Everything is computed from traces of the pair (:mod:`ppvae.contract`), so any contract-keeping
model works; latents with discrete support (VQ-VAE codes) or non-Gaussian marginals (flows,
point masses) raise a clear error naming the site.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from ..core.contract import check_pair
from ..core.modes import evaluates
from ..core.records import frame
from ..core.trace import particle_groups, trace_pair

__all__ = ["CollapseReport", "base_distribution", "gaussian_marginals", "posterior_collapse"]


class CollapseReport(NamedTuple):
    """KL per latent dimension and activity of one latent site."""

    latent: str  # the site name
    kl: torch.Tensor  # [K] mean over datapoints of KL(q(z_d | x) || p(z_d))
    kl_stderr: torch.Tensor  # [K] standard error of that mean over datapoints
    activity: torch.Tensor  # [K] Var over datapoints of E_q[z_d | x]
    threshold: float  # a dimension is active when its activity exceeds this
    kl_total_stderr: float | None = None  # s.e. over datapoints of the KL summed over dims

    @property
    def active(self) -> torch.Tensor:
        """[K] bool: active units."""
        return self.activity > self.threshold

    @property
    def num_active(self) -> int:
        """The number of active units."""
        return int(self.active.sum())

    def _total(self) -> str:
        se = "" if self.kl_total_stderr is None else f" ± {self.kl_total_stderr:.3f}"
        return f"{float(self.kl.sum()):.3f}{se}"

    def __repr__(self) -> str:
        """Active units and the KL summed over dimensions, on one line."""
        return (f"CollapseReport({self.latent}: {self.num_active}/{self.kl.numel()} active units "
                f"(activity > {self.threshold:g}); KL(q ‖ p) summed over dimensions "
                f"{self._total()} nats per datapoint)")

    def to_dataframe(self):
        """One row per latent dimension (pandas; index ``dim``).

        Columns ``kl`` and ``kl_stderr`` (nats, mean over datapoints and its s.e.),
        ``activity`` (Var over datapoints of E_q[z_d | x]) and ``active`` (bool).
        """
        return frame({"kl": self.kl, "kl_stderr": self.kl_stderr, "activity": self.activity,
                      "active": self.active}, index_name="dim")

    def to_markdown(self) -> str:
        """A summary line and a table of KL and activity per dimension (markdown)."""
        rows = [f"Posterior collapse of `{self.latent}`: {self.num_active}/{self.kl.numel()} "
                f"active units (activity Var_x E_q[z_d | x] > {self.threshold:g}); KL(q ‖ p) "
                f"{self._total()} nats per datapoint, summed over dimensions.", "",
                "| dim | KL (nats) | activity | active |", "|---|---|---|---|"]
        for d in range(self.kl.numel()):
            rows.append(f"| {d} | {float(self.kl[d]):.4f} ± {float(self.kl_stderr[d]):.4f} | "
                        f"{float(self.activity[d]):.4g} | {'yes' if self.active[d] else 'no'} |")
        return "\n".join(rows) + "\n"

    def _repr_markdown_(self) -> str:
        """The table of :meth:`to_markdown` (Jupyter renders it)."""
        return self.to_markdown()


def base_distribution(fn):
    """``fn`` without its Independent, Masked and Expanded wrappers."""
    while isinstance(fn, dist.Independent | dist.MaskedDistribution | dist.ExpandedDistribution):
        fn = fn.base_dist
    return fn


def gaussian_marginals(fn, site: str, role: str) -> dist.Normal:
    """One-dimensional Gaussian marginals of a site's distribution: ``Normal`` [..., K]."""
    base = base_distribution(fn)
    if isinstance(base, dist.Normal) and len(fn.event_shape) == 1:
        return dist.Normal(base.loc.expand(fn.shape()), base.scale.expand(fn.shape()))
    if isinstance(base, dist.MultivariateNormal):
        var = torch.diagonal(base.covariance_matrix, dim1=-2, dim2=-1)  # [..., K]
        return dist.Normal(base.loc.expand(var.shape), var.sqrt())
    raise ValueError(
        f"KL per latent dimension needs Gaussian marginals with one event dimension; the "
        f"{role}'s site '{site}' is {type(fn).__name__} over {type(base).__name__} with event "
        f"shape {tuple(fn.event_shape)} (point masses, flows and discrete latents do not apply)"
    )


def _per_datapoint(t: torch.Tensor) -> torch.Tensor:
    """Average ``[..., N, K]`` over its leading (particle, broadcast) dimensions: ``[N, K]``."""
    return t.reshape(-1, *t.shape[-2:]).mean(0)


@evaluates
def posterior_collapse(model, guide, x: torch.Tensor, *, latent: str = "z",
                       num_samples: int = 16, threshold: float = 1e-2,
                       model_kwargs: Mapping[str, Any] | None = None) -> CollapseReport:
    """KL per dimension and active units of ``latent`` on data ``x`` (see module docstring).

    ``num_samples`` draws per datapoint average over the site's parents (and over draws of
    the upstream latents a hierarchical guide conditions on).
    """
    kwargs = dict(model_kwargs or {})
    info = check_pair(model, guide, x, model_kwargs=kwargs)
    info.require_continuous("KL per latent dimension")
    if latent not in info.latent:
        raise ValueError(f"no latent site '{latent}'; the pair's latent sites are "
                         f"{list(info.latent)}")

    with torch.no_grad():
        kls, means = [], []
        for group in particle_groups(num_samples, info.vectorized):
            guide_tr, model_tr = trace_pair(model, guide, x, kwargs, particles=group,
                                            particle_dim=info.particle_dim)
            q = gaussian_marginals(guide_tr.nodes[latent]["fn"], latent, "guide")
            p = gaussian_marginals(model_tr.nodes[latent]["fn"], latent, "model")
            kls.append(_per_datapoint(kl_divergence(q, p)))  # [N, K] averaged over draws
            means.append(_per_datapoint(q.loc))  # [N, K] E_q[z | x], averaged over draws
        kl, post_mean = torch.stack(kls).mean(0), torch.stack(means).mean(0)
    n = info.num_data
    se = kl.std(0) / n**0.5 if n > 1 else torch.full_like(kl[0], float("nan"))
    total_se = float(kl.sum(1).std() / n**0.5) if n > 1 else float("nan")
    return CollapseReport(latent, kl.mean(0), se, post_mean.var(0), threshold, total_se)
