"""Posterior comparison: amortized q, local q* and MCMC side by side for chosen datapoints.

For each chosen datapoint, the reference posterior is MCMC (:func:`ppvae.hmc` or
:func:`ppvae.nuts`); each guide (an amortized encoder, a per-datapoint q* from local VI, any
guide keeping the contract) is summarized from its own samples by mean, standard deviation and
correlation matrix, and scored by KL(q || N(m, S)), the KL divergence from q to the Gaussian fit
of the MCMC draws (moment matching), estimated by Monte Carlo as E_q[log q(z) - log N(z; m, S)].
This is the picture of Cremer, Li and Duvenaud (2018, figure 2): where the amortized q sits
relative to the best q* of its family and to the true posterior. The result renders as markdown
and as an ArviZ density overlay saved to PNG.

Every reported number carries its Monte Carlo standard error, and the KL's includes the error of
the MCMC reference itself:

* means and standard deviations: for MCMC, ArviZ's MCSE of the mean and of the sd (from the
  bulk ESS of the draws and of their squared deviations, :func:`ppvae.diagnostics`); for a guide,
  the same formulas with its independent draws (``sd / sqrt(S)`` for the mean). The s.e. of a
  difference of means (guide - MCMC) is the root sum of squares of the two.
* KL(q || N(m, S)): the guide's draws give ``sd(log q - log N) / sqrt(S)``; the MCMC fit's
  (m, S) are themselves estimates, and a delta-method expansion to second order in their errors
  (``Cov(dm) = diag(mcse) R diag(mcse)`` with R the posterior correlation; ``dS`` with
  Wishart-like fluctuations at the effective sample size ``n_S = sd^2 / (2 mcse_sd^2)``, averaged
  over coordinates) gives, in coordinates whitened by S, with ``a = S^{-1/2} (mu_q - m)`` and
  ``B = S^{-1/2} (Sigma_q + (mu_q - m)(mu_q - m)^T) S^{-1/2}``:

  - a bias ``tr(S^{-1} Cov(dm)) / 2 + (D + 1) tr(2B - I) / (4 n_S)`` (noise in the fit can only
    move it away from q), which is subtracted from the reported KL, and
  - a variance ``(mu_q - m)^T S^{-1} Cov(dm) S^{-1} (mu_q - m) + tr((I - B)^2) / (2 n_S)``
    (first order) ``+ tr((S^{-1} Cov(dm))^2) / 2 + D (D + 1) / (4 n_S^2)`` (second order, what
    remains when q equals the fit), added to the guide's.

  Without the MCMC part an exact guide, whose log q - log N is nearly constant, would report a
  near-zero s.e. around a KL of about ``D / (2 ESS) + D (D + 1) / (4 ESS)`` that is pure MCMC
  noise.

In a notebook a comparison renders as its markdown table (``_repr_markdown_``), its ``repr`` is
one line per method, and ``to_dataframe()`` gives one row per (method, datapoint) with the
means, sds, their s.e.s and the KL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch.distributions import MultivariateNormal

from ..core.modes import evaluates
from ..core.potential import Potential
from ..core.progress import stage
from ..core.records import frame
from ..infer.diagnostics import diagnostics, to_inference_data

__all__ = ["PosteriorComparison", "PosteriorSummary", "compare_posteriors", "mcmc_kl_error"]


def _mean_kl(s) -> str:
    """``"KL 0.012 ± 0.004 (mean over M datapoints)"`` of a guide's summary."""
    m = s.kl_to_mcmc.numel()
    se = float(s.kl_stderr.pow(2).sum().sqrt()) / m  # independent errors across datapoints
    return f"KL {float(s.kl_to_mcmc.mean()):.4f} ± {se:.4f} (mean over {m} datapoints)"


class PosteriorSummary(NamedTuple):
    """One method's posterior summary at the compared datapoints."""
    method: str
    mean: torch.Tensor  # [M, D]
    sd: torch.Tensor  # [M, D]
    corr: torch.Tensor  # [M, D, D]
    kl_to_mcmc: torch.Tensor | None  # [M] KL(q || Gaussian fit of MCMC), MCMC bias removed
    kl_stderr: torch.Tensor | None  # [M] guide's and MCMC's Monte Carlo errors combined
    samples: torch.Tensor  # [S, M, D] draws (MCMC chains pooled)
    mean_se: torch.Tensor | None = None  # [M, D] Monte Carlo s.e. of mean (MCSE for MCMC)
    sd_se: torch.Tensor | None = None  # [M, D] Monte Carlo s.e. of sd (MCSE for MCMC)
    kl_mcmc_stderr: torch.Tensor | None = None  # [M] the MCMC reference's part of kl_stderr

    def __repr__(self) -> str:
        """The method, sizes and the mean KL to the MCMC fit, on one line."""
        s, m, d = self.samples.shape
        text = f"PosteriorSummary({self.method}: {m} datapoints x {d} coordinates, {s} draws"
        if self.kl_to_mcmc is not None and self.kl_stderr is not None:
            text += f"; {_mean_kl(self)}"
        return text + ")"

    def to_dataframe(self, datapoints=None, coordinates=None):
        """One row per compared datapoint (pandas; index ``datapoint``).

        Columns ``mean <c>``, ``sd <c>`` and, where present, ``mean_se <c>``, ``sd_se <c>`` for
        each coordinate label ``c`` (default ``0``..``D-1``; :class:`PosteriorComparison` passes
        ``z[0]``, ...), then ``kl_to_mcmc``, ``kl_stderr`` and ``kl_mcmc_stderr`` (nats) for a
        guide. ``datapoints`` labels the rows (default 0..M-1).
        """
        cols = self._columns(coordinates)
        return frame(cols, index=None if datapoints is None else list(datapoints))

    def _columns(self, coordinates=None) -> dict[str, torch.Tensor]:
        d = self.mean.shape[-1]
        names = [str(c) for c in (range(d) if coordinates is None else coordinates)]
        if len(names) != d:
            raise ValueError(f"{len(names)} coordinate labels for {d} coordinates")
        cols: dict[str, torch.Tensor] = {}
        for q in ("mean", "sd", "mean_se", "sd_se"):
            v = getattr(self, q)
            if v is not None:
                cols.update({f"{q} {c}": v[:, j] for j, c in enumerate(names)})
        for q in ("kl_to_mcmc", "kl_stderr", "kl_mcmc_stderr"):
            if getattr(self, q) is not None:
                cols[q] = getattr(self, q)
        return cols


class PosteriorComparison(NamedTuple):
    """MCMC and every guide summarized at the same datapoints."""
    datapoints: tuple[int, ...]  # indices into x
    latent_names: tuple[str, ...]  # "site[i]" for each of the D coordinates
    summaries: tuple[PosteriorSummary, ...]  # MCMC first, then the guides in the given order

    def __repr__(self) -> str:
        """The datapoints, coordinates and each method's mean KL to the MCMC fit."""
        pts = list(self.datapoints)
        shown = str(pts) if len(pts) <= 8 else f"[{', '.join(map(str, pts[:8]))}, ...]"
        lines = [f"PosteriorComparison({len(pts)} datapoints {shown}, coordinates "
                 f"{', '.join(self.latent_names)}; KL(q ‖ Gaussian fit of MCMC) in nats"]
        for s in self.summaries:
            kl = (_mean_kl(s) if s.kl_to_mcmc is not None and s.kl_stderr is not None
                  else "the reference")
            lines.append(f"  {s.method}: {s.samples.shape[0]} draws, {kl}")
        return "\n".join(lines) + ")"

    def _repr_markdown_(self) -> str:
        """The table of :meth:`to_markdown` (Jupyter renders it)."""
        return self.to_markdown()

    def to_dataframe(self):
        """Every method at every datapoint: one row per (method, datapoint) (pandas).

        A MultiIndex (``method``, ``datapoint``: the labels of :attr:`datapoints`) and the
        columns of :meth:`PosteriorSummary.to_dataframe` with the coordinates named as in
        :attr:`latent_names` (``mean z[0]``, ``sd z[0]``, ...); the KL columns are NaN for the
        MCMC reference. ``df.xs("mcmc")`` is the reference's rows.
        """
        parts = [s._columns(self.latent_names) for s in self.summaries]
        m = len(self.datapoints)
        names = list(dict.fromkeys(k for cols in parts for k in cols))  # first-seen order
        cols: dict = {"method": [s.method for s in self.summaries for _ in range(m)],
                      "datapoint": list(self.datapoints) * len(parts)}
        for name in names:
            cols[name] = torch.cat([c[name].double().cpu() if name in c else
                                    torch.full((m,), math.nan, dtype=torch.float64)
                                    for c in parts])
        return frame(cols).set_index(["method", "datapoint"])

    def to_markdown(self) -> str:
        """A markdown table: mean, sd and KL to the MCMC fit per datapoint and method.

        Means and sds show their largest Monte Carlo s.e. over coordinates; the KL's s.e.
        includes the MCMC reference's error (module docstring).
        """
        rows = ["| datapoint | method | mean (± s.e.) | sd (± s.e.) | KL(q ‖ N(MCMC)) |",
                "|---|---|---|---|---|"]

        def fmt(t, se):
            out = "[" + ", ".join(f"{v:.3f}" for v in t.tolist()) + "]"
            return out if se is None else f"{out} (± {float(se.max()):.3f})"

        for j, n in enumerate(self.datapoints):
            for s in self.summaries:
                kl = "—" if s.kl_to_mcmc is None else (
                    f"{float(s.kl_to_mcmc[j]):.4f} ± "
                    f"{float(cast(torch.Tensor, s.kl_stderr)[j]):.4f}")  # given with kl_to_mcmc
                mse = None if s.mean_se is None else s.mean_se[j]
                sse = None if s.sd_se is None else s.sd_se[j]
                rows.append(f"| {n} | {s.method} | {fmt(s.mean[j], mse)} | {fmt(s.sd[j], sse)} "
                            f"| {kl} |")
        return "\n".join(rows)

    def plot(self, path=None, **options):
        """Corner plots of every method against MCMC (:func:`ppvae.posterior_pairs`).

        Saved to ``path`` when given; ``options`` go to ``posterior_pairs`` (``datapoints``,
        ``dims``, ``methods``, ``max_dims``, ...). Returns the figure.
        """
        from .posterior_figures import posterior_pairs

        return posterior_pairs(self, path=path, **options)


def _summary(method: str, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    m = z.mean(0)  # [M, D]
    zc = z - m
    cov = torch.einsum("smd,sme->mde", zc, zc) / (z.shape[0] - 1)  # [M, D, D]
    sd = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
    corr = cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2))
    return m, sd, corr, cov


def _flat(samples: Mapping[str, torch.Tensor], names) -> torch.Tensor:
    return torch.cat([samples[n] for n in names], dim=-1)


def _iid_stderr(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo s.e. of the mean and of the sd, ``[M, D]``, from independent draws ``z``.

    ``z`` is ``[S, M, D]``; the formulas are ArviZ's MCSE with ESS = S.
    """
    s = z.shape[0]
    c2 = (z - z.mean(0)) ** 2
    var = c2.mean(0)
    varvar = ((c2**2).mean(0) - var**2) / s
    return z.std(0) / math.sqrt(s), (varvar / var / 4).sqrt()


def mcmc_kl_error(m: torch.Tensor, cov: torch.Tensor, mcse_mean: torch.Tensor,
                  mcse_sd: torch.Tensor, mu_q: torch.Tensor,
                  cov_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bias and variance ``[M]`` that the MCMC fit's errors add to KL(q || N(m, S)).

    ``m [M, D]``, ``cov [M, D, D]`` are the fit, ``mcse_mean``, ``mcse_sd [M, D]`` its MCSE,
    ``mu_q``, ``cov_q`` the guide's moments. Formulas and assumptions: module docstring.
    """
    d = m.shape[-1]
    eye = torch.eye(d, dtype=m.dtype, device=m.device)
    sd = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
    corr = cov / (sd.unsqueeze(-1) * sd.unsqueeze(-2))
    cov_m = mcse_mean.unsqueeze(-1) * corr * mcse_mean.unsqueeze(-2)  # Cov(dm) [M, D, D]
    inv_ns = (2 * mcse_sd**2 / sd**2).mean(-1)  # 1 / n_S [M]
    chol = torch.linalg.cholesky(cov)
    delta = mu_q - m
    a = cov_q + delta.unsqueeze(-1) * delta.unsqueeze(-2)
    half = torch.linalg.solve_triangular(chol, a, upper=False)
    b = torch.linalg.solve_triangular(chol, half.mT, upper=False)  # L^-1 A L^-T
    p = torch.cholesky_solve(cov_m, chol)  # S^-1 Cov(dm)
    g = torch.cholesky_solve(delta.unsqueeze(-1), chol).squeeze(-1)  # S^-1 (mu_q - m)
    trace = lambda t: torch.diagonal(t, dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    bias = trace(p) / 2 + (d + 1) * trace(2 * b - eye) * inv_ns / 4
    first = torch.einsum("md,mde,me->m", g, cov_m, g) + trace((eye - b) @ (eye - b)) * inv_ns / 2
    second = trace(p @ p) / 2 + d * (d + 1) * inv_ns**2 / 4
    return bias, first + second


@evaluates
def compare_posteriors(model, x: torch.Tensor, mcmc, guides: Mapping[str, object] | None = None,
                       datapoints: Sequence[int] | None = None, *, num_samples: int = 2000,
                       mcmc_name: str = "mcmc", model_kwargs: Mapping[str, Any] | None = None,
                       progress: bool | None = None) -> PosteriorComparison:
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
        progress: a bar over the guides, each drawn and scored in turn
            (:mod:`ppvae.core.progress`; None: only on a terminal). The MCMC reference is
            given, not run here: pass ``progress`` to :func:`ppvae.hmc` / :func:`ppvae.nuts`.
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
    diag = getattr(mcmc, "diagnostics", None)  # hmc/nuts computed them already (diagnose=True)
    if diag is not None and list(samples) == names:
        diag = diag._replace(**{f: getattr(diag, f)[idx] for f in diag._fields})
    else:
        diag = diagnostics(to_inference_data({n: samples[n][:, :, idx] for n in names}))
    mcse_mean = torch.as_tensor(diag.mcse_mean, dtype=ref.dtype, device=ref.device)  # [M, D]
    mcse_sd = torch.as_tensor(diag.mcse_sd, dtype=ref.dtype, device=ref.device)
    out = [PosteriorSummary(mcmc_name, m_ref, sd_ref, corr_ref, None, None, ref, mcse_mean,
                            mcse_sd)]
    guides = dict(guides or {})
    with stage(progress, "compare_posteriors", total=len(guides), unit="guide") as bar:
        for name, guide in guides.items():
            out.append(_score_guide(model, x, guide, name, kwargs, names, idx, num_samples,
                                    (m_ref, cov_ref, mcse_mean, mcse_sd)))
            bar.update()
    return PosteriorComparison(tuple(idx), labels, tuple(out))


def _score_guide(model, x, guide, name: str, kwargs: dict, names: list[str], idx: list[int],
                 num_samples: int, ref: tuple[torch.Tensor, ...]) -> PosteriorSummary:
    """One guide's summary at ``x[idx]``, scored against the MCMC fit ``ref``.

    ``ref`` is ``(m, S, mcse_mean, mcse_sd)`` of the MCMC draws (:func:`mcmc_kl_error`).
    """
    m_ref, cov_ref, mcse_mean, mcse_sd = ref
    fit = MultivariateNormal(m_ref, covariance_matrix=cov_ref)  # batch [M]
    gp = Potential(model, x, guide=guide, model_kwargs=kwargs)
    with torch.no_grad():
        u = gp.sample_init(num_samples)  # [S, N, D] unconstrained
        values, _ = gp.unflatten(u)
        z = _flat(gp.per_datapoint_values(values), names)[:, idx]  # [S, M, D]
        log_q = gp.log_guide(u, values)[:, idx]  # [S, M]
        diff = log_q - fit.log_prob(z)  # [S, M]
    m, sd, corr, cov = _summary(name, z)
    bias, var_mcmc = mcmc_kl_error(m_ref, cov_ref, mcse_mean, mcse_sd, m, cov)
    kl = diff.mean(0) - bias
    se = (diff.var(0) / num_samples + var_mcmc).sqrt()
    mean_se, sd_se = _iid_stderr(z)
    return PosteriorSummary(name, m, sd, corr, kl, se, z, mean_se, sd_se, var_mcmc.sqrt())
