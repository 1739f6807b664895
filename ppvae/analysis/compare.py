"""Posterior comparison: amortized q, local q* and MCMC side by side for chosen datapoints.

For each chosen datapoint, the reference posterior is MCMC (:func:`ppvae.hmc` or
:func:`ppvae.nuts`); each guide (an amortized encoder, a per-datapoint q* from local VI, any
guide keeping the contract) is summarized from its own samples by mean, standard deviation and
correlation matrix, and scored by KL(q || N(m, S)), the KL divergence from q to the Gaussian fit
of the MCMC draws (moment matching), estimated by Monte Carlo as E_q[log q(z) - log N(z; m, S)]
with its standard error. This is the picture of Cremer, Li and Duvenaud (2018, figure 2): where
the amortized q sits relative to the best q* of its family and to the true posterior. The result
renders as markdown and as an ArviZ density overlay saved to PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch.distributions import MultivariateNormal

from ..core.modes import evaluates
from ..core.potential import Potential
from ..infer.diagnostics import import_arviz, to_inference_data

__all__ = ["PosteriorComparison", "PosteriorSummary", "compare_posteriors"]


class PosteriorSummary(NamedTuple):
    """One method's posterior summary at the compared datapoints."""
    method: str
    mean: torch.Tensor  # [M, D]
    sd: torch.Tensor  # [M, D]
    corr: torch.Tensor  # [M, D, D]
    kl_to_mcmc: torch.Tensor | None  # [M] KL(q || Gaussian fit of MCMC); None for MCMC itself
    kl_stderr: torch.Tensor | None  # [M]
    samples: torch.Tensor  # [S, M, D] draws (MCMC chains pooled)


class PosteriorComparison(NamedTuple):
    """MCMC and every guide summarized at the same datapoints."""
    datapoints: tuple[int, ...]  # indices into x
    latent_names: tuple[str, ...]  # "site[i]" for each of the D coordinates
    summaries: tuple[PosteriorSummary, ...]  # MCMC first, then the guides in the given order

    def to_markdown(self) -> str:
        """A markdown table: mean, sd and KL to the MCMC fit per datapoint and method."""
        rows = ["| datapoint | method | mean | sd | KL(q ‖ N(MCMC)) |", "|---|---|---|---|---|"]
        fmt = lambda t: "[" + ", ".join(f"{v:.3f}" for v in t.tolist()) + "]"  # noqa: E731
        for j, n in enumerate(self.datapoints):
            for s in self.summaries:
                kl = "—" if s.kl_to_mcmc is None else (
                    f"{float(s.kl_to_mcmc[j]):.4f} ± "
                    f"{float(cast(torch.Tensor, s.kl_stderr)[j]):.4f}")  # given with kl_to_mcmc
                rows.append(f"| {n} | {s.method} | {fmt(s.mean[j])} | {fmt(s.sd[j])} | {kl} |")
        return "\n".join(rows)

    def plot(self, path: str, max_dims: int = 4):
        """ArviZ density overlay of every method, saved to ``path`` (PNG); returns the figure.

        One panel per (datapoint, coordinate) for the first ``max_dims`` coordinates.
        """
        az = import_arviz()
        datas = [to_inference_data({"z": s.samples[..., :max_dims].unsqueeze(0)},
                                   datapoints=self.datapoints) for s in self.summaries]
        axes = az.plot_density(datas, data_labels=[s.method for s in self.summaries],
                               var_names=["z"], shade=0.1)
        fig = axes.ravel()[0].figure
        fig.savefig(path, dpi=80)
        return fig


def _summary(method: str, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    m = z.mean(0)  # [M, D]
    zc = z - m
    cov = torch.einsum("smd,sme->mde", zc, zc) / (z.shape[0] - 1)  # [M, D, D]
    sd = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
    corr = cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2))
    return m, sd, corr, cov


def _flat(samples: Mapping[str, torch.Tensor], names) -> torch.Tensor:
    return torch.cat([samples[n] for n in names], dim=-1)


@evaluates
def compare_posteriors(model, x: torch.Tensor, mcmc, guides: Mapping[str, object] | None = None,
                       datapoints: Sequence[int] | None = None, *, num_samples: int = 2000,
                       mcmc_name: str = "mcmc",
                       model_kwargs: Mapping[str, Any] | None = None) -> PosteriorComparison:
    """Compare guides to MCMC on ``x[datapoints]``.

    Args:
        model: the model keeping the ppvae contract.
        x: the data ``[N, ...]`` the MCMC ran on and the guides take.
        mcmc: an :class:`ppvae.HMCResult` / :class:`ppvae.NUTSResult`, or its ``samples``
            (site -> ``[C, S, N, size]``).
        guides: name -> guide (amortized, local q*, ...); each is run on the whole ``x``.
        datapoints: indices to compare (default all).
        num_samples: draws per datapoint from each guide.
        mcmc_name: the method name of the MCMC reference in the summaries.
        model_kwargs: the model's own keyword arguments, passed to model and guides.
    """
    kwargs = dict(model_kwargs or {})
    samples = getattr(mcmc, "samples", mcmc)
    idx = list(range(x.shape[0])) if datapoints is None else [int(i) for i in datapoints]
    pot = Potential(model, x, model_kwargs=kwargs)
    names = [s.name for s in pot.sites]
    missing = [n for n in names if n not in samples]
    if missing:
        raise ValueError(f"the MCMC samples lack the model's latent site(s) {missing}")
    labels = tuple(f"{s.name}[{i}]" for s in pot.sites for i in range(samples[s.name].shape[-1]))
    ref = _flat(samples, names)  # [C, S, N, D]
    ref = ref.reshape(-1, *ref.shape[2:])[:, idx]  # [C*S, M, D]
    m_ref, sd_ref, corr_ref, cov_ref = _summary(mcmc_name, ref)
    out = [PosteriorSummary(mcmc_name, m_ref, sd_ref, corr_ref, None, None, ref)]
    fit = MultivariateNormal(m_ref, covariance_matrix=cov_ref)  # batch [M]
    for name, guide in (guides or {}).items():
        gp = Potential(model, x, guide=guide, model_kwargs=kwargs)
        with torch.no_grad():
            u = gp.sample_init(num_samples)  # [S, N, D] unconstrained
            values, _ = gp.unflatten(u)
            z = _flat(gp.per_datapoint_values(values), names)[:, idx]  # [S, M, D]
            log_q = gp.log_guide(u, values)[:, idx]  # [S, M]
            diff = log_q - fit.log_prob(z)  # [S, M]
        m, sd, corr, _ = _summary(name, z)
        kl, se = diff.mean(0), diff.std(0) / math.sqrt(num_samples)
        out.append(PosteriorSummary(name, m, sd, corr, kl, se, z))
    return PosteriorComparison(tuple(idx), labels, tuple(out))
