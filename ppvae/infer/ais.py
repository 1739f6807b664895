"""Annealed importance sampling (Neal 2001) for per-datapoint log p(x), with HMC transitions.

Along the geometric path f_beta(z) = f_0(z)^(1 - beta) p(x_n, z)^beta from the prior (or a
guide) f_0 to the unnormalized posterior, with 0 = beta_0 < ... < beta_T = 1, each of C chains
per datapoint carries the log weight

    log w = sum_t (beta_t - beta_{t-1}) [log p(x_n, z_{t-1}) - log f_0(z_{t-1})],

z_t an HMC transition leaving f_{beta_t} invariant. ``E[w] = p(x_n)``, so
``log mean_c w_c`` is a stochastic lower bound on log p(x_n) (Jensen) and converges to it as T
grows (Wu, Burda, Salakhutdinov and Grosse 2017 for decoder-based models). The schedule is
sigmoidal by default (Grosse, Ghahramani and Adams 2015). Every chain's step size moves towards
a target acceptance rate after each transition (as in Wu et al. 2017) in a short pilot run; the
real run uses the pilot's per-datapoint step-size schedule, fixed, so its transition kernels do
not depend on its own chains' states and E[w] = p(x) holds exactly (online adaptation, which
measurably biases reverse AIS, is available with ``pilot_chains=0``). All [C, N] chains
are one tensor; the log density comes from the model's trace (:class:`ppvae.potential.Potential`),
so any model keeping the contract works. The result has ``per_datapoint`` and ``stderr`` like
:class:`ppvae.Bound`, so the gap report can use it as its log p(x).

Defaults (measured by ``benchmarks/ais_defaults.py`` on a VAE with a 2-D latent trained on the
digits, against log p(x) by quadrature, one thread): 2000 temperatures, 256 chains, one leapfrog
step per transition. At a fixed number of gradient evaluations, more temperatures with one
leapfrog step each gave the smallest standard errors (also on an 8-D latent VAE); 10 leapfrog
steps per transition bought nothing but time. The s.e. then falls as 1 / sqrt(steps x chains).
On 50 test digits the defaults gave a per-datapoint s.e. of 0.009 nats (median; 0.017 at the 90th
percentile, 0.025 at most) in 27 s from the prior, where the old defaults (500 steps, 16 chains,
10 leapfrog steps) gave 0.11 in 13 s; from the encoder, 0.002. Each log-density evaluation
covers all 256 x N chains at once, so memory grows with N: for large data sets lower
``num_chains`` or evaluate blocks of rows (:func:`ppvae.distributed.sharded.sharded_ais`).

The standard error splits the C chains into two halves: it is the larger of the spread of the
halves' estimates and the larger half's delta-method error, over sqrt(2) (as for several IWAE
estimates). The plain delta method over all chains undercovers when the weights are skewed; the
split rule covered log p(x) with +-2 s.e. in >= 93% of datapoints on PPCA and factor analysis
(``tests/infer/test_ais_coverage.py``).

Mean acceptance far from its target on some datapoints (outside
:data:`ppvae.core.diagnostic_warnings.AIS_ACCEPT_RANGE`) raises an :class:`ppvae.AISWarning`.
A BDMC gap (:func:`ppvae.infer.bdmc.certify`, or ``ais(..., bdmc=True)``) travels with the result
and is printed next to its number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from ..core.bounds import delta_stderr, logmeanexp
from ..core.diagnostic_warnings import AIS_ACCEPT_RANGE, AISWarning, warn
from ..core.estimate import record_mean, record_mean_stderr
from ..core.modes import evaluates
from ..core.potential import Potential
from ..core.progress import stage
from ..core.records import frame
from .hmc import hmc_step

__all__ = [
    "MIN_PILOT_TRANSITIONS",
    "PILOT_RATE",
    "PILOT_WARMUP",
    "AISResult",
    "Annealed",
    "BDMCCertificate",
    "ais",
    "ais_log_px",
    "anneal",
    "check_acceptance",
    "log_mean_weight",
    "pilot_step_sizes",
    "schedule",
]

MIN_PILOT_TRANSITIONS = 200  # the pilot repeats temperatures of shorter schedules up to this
PILOT_WARMUP = 50  # transitions tuning the pilot's step sizes for f_0 before it anneals
PILOT_RATE = 0.2  # the pilot's online adaptation: log step size += rate * (accept - target)


def schedule(num_steps: int, kind: str = "sigmoid", *, delta: float = 4.0,
             dtype=torch.float64, device=None) -> torch.Tensor:
    """Inverse temperatures ``[num_steps + 1]`` from 0 to 1: "sigmoid" or "linear"."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=dtype, device=device)
    if kind == "linear":
        return t
    if kind != "sigmoid":
        raise ValueError(f"schedule kind must be 'sigmoid' or 'linear', got {kind!r}")
    s = torch.sigmoid(delta * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


class BDMCCertificate(NamedTuple):
    """The BDMC gap of AIS with given settings, on data simulated from the model.

    Forward and reverse AIS with the same settings sandwich the true log p(x) of each simulated
    datapoint; their mean gap bounds the error of forward AIS on such data (Grosse, Ghahramani
    and Adams 2015). It certifies AIS on real data as far as the real data resemble the
    model's own.
    """

    gap: float  # mean gap upper - lower over the simulated datapoints, nats
    gap_stderr: float  # its Monte Carlo standard error
    num_data: int  # simulated datapoints
    max_gap: float  # the threshold it was checked against

    @property
    def upper(self) -> float:
        """The gap plus two standard errors: how large the gap may be, given its noise."""
        return self.gap + 2 * self.gap_stderr

    def __repr__(self) -> str:
        verdict = "certified" if self.certified else "not certified"
        return (f"BDMCCertificate(gap {self.gap:.4f} ± {self.gap_stderr:.4f} nats over "
                f"{self.num_data} simulated datapoints, {verdict} below {self.max_gap:g})")

    def to_dataframe(self):
        """A one-row pandas DataFrame: the fields, ``upper`` and ``certified``."""
        df = frame({"gap": [self.gap], "gap_stderr": [self.gap_stderr],
                    "num_data": [self.num_data], "max_gap": [self.max_gap],
                    "upper": [self.upper], "certified": [self.certified]})
        df.index.name = None
        return df

    @property
    def certified(self) -> bool:
        """Whether the gap is shown below :attr:`max_gap`: ``gap + 2 s.e. <= max_gap``."""
        return self.upper <= self.max_gap

    def __str__(self) -> str:
        return (f"BDMC gap on simulated data with these settings: {self.gap:.3f} ± "
                f"{self.gap_stderr:.3f} nats over {self.num_data} datapoints"
                + ("" if self.certified else f", not shown below {self.max_gap:g}"))


class AISResult(NamedTuple):
    """Per-datapoint AIS estimates of log p(x) (or, reversed, of -log p(x))."""

    per_datapoint: torch.Tensor  # [N] log mean_c w_c
    stderr: torch.Tensor  # [N] standard error, chains split in halves (module docstring)
    log_weights: torch.Tensor  # [C, N]
    accept_rate: torch.Tensor  # [C, N] mean acceptance probability over the transitions
    step_size: torch.Tensor  # [C, N] final step sizes ([N] in BDMC's: the pilot's, shared)
    samples: dict[str, torch.Tensor]  # final states, site -> [C, *mid, N, *event]
    num_steps: int  # intermediate distributions T
    settings: Mapping[str, Any] | None = None  # what a BDMC certificate must match
    certificate: BDMCCertificate | None = None  # attached by ppvae.infer.bdmc.certify

    @property
    def name(self) -> str:
        """The estimator's name, ``"ais"`` (a :class:`ppvae.Bound`'s: ``"elbo"``, ``"iwae"``)."""
        return "ais"

    @property
    def mean(self) -> float:
        """Average of ``per_datapoint`` over datapoints."""
        return record_mean(self)

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of :attr:`mean` (independent errors across datapoints)."""
        return record_mean_stderr(self)

    def summary(self) -> str:
        """One line: the mean log p(x) with its s.e., and the BDMC gap when certified."""
        line = f"AIS log p(x) = {self.mean:.4f} ± {self.mean_stderr:.4f}"
        return line + (f" ({self.certificate})" if self.certificate is not None else "")

    def to_dataframe(self):
        """A pandas DataFrame with one row per datapoint (index ``datapoint``).

        Columns: ``per_datapoint`` (log p(x) estimate, nats; for reverse AIS the upper bound)
        and ``stderr``; over each datapoint's chains: ``accept_rate`` (mean acceptance),
        ``step_size`` (mean final step size) and ``chain_ess`` (the Kish effective number of
        chains ``(sum w)^2 / sum w^2`` of the AIS weights, between 1 and C).
        """
        lw = self.log_weights.detach()
        ess = torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))  # [N]
        step = self.step_size.mean(0) if self.step_size.dim() == 2 else self.step_size  # [N]
        return frame({"per_datapoint": self.per_datapoint, "stderr": self.stderr,
                      "accept_rate": self.accept_rate.mean(0), "step_size": step,
                      "chain_ess": ess})

    def __repr__(self) -> str:
        c, n = self.log_weights.shape
        cert = f"; {self.certificate}" if self.certificate is not None else ""
        return (f"AISResult(log p(x): mean {self.mean:.4f} ± {self.mean_stderr:.4f} over {n} "
                f"datapoints, {c} chains, {self.num_steps} steps, acceptance "
                f"{float(self.accept_rate.mean()):.2f}{cert})")


class Annealed(NamedTuple):
    """The end of one annealing run: final log weights, states, acceptance and step sizes."""
    log_w: torch.Tensor  # [C, N]
    u: torch.Tensor  # [C, N, D] final states
    accept_rate: torch.Tensor  # [C, N]
    step_sizes: torch.Tensor  # [T, C, N] the step size of every transition


def anneal(pot: Potential, u: torch.Tensor, betas: torch.Tensor, *, num_leapfrog: int = 1,
           step_size: float | torch.Tensor = 0.1, target_accept: float = 0.65,
           adapt_rate: float = 0.05, step_sizes: torch.Tensor | None = None,
           bar: tqdm | None = None) -> Annealed:
    """Run AIS from ``u [C, N, D]`` (a draw from f_{betas[0]}) along ``betas``.

    ``betas`` may decrease (reverse AIS for BDMC). With ``step_sizes [T, C or 1, N]`` the
    transitions use that fixed schedule; otherwise each chain's log step size starts at
    ``step_size`` (a number or ``[C, N]``) and moves by ``adapt_rate * (accept - target_accept)``
    after every transition (online adaptation: cheap, but the kernels then depend on the chain's
    past, which biases the estimate slightly; :func:`ais` adapts in a pilot run instead).
    ``bar`` (a :func:`ppvae.core.progress.bar`) counts the transitions.
    """
    betas = betas.to(dtype=u.dtype, device=u.device)
    tm = pot.terms(u)
    li, ld, gi, gd = tm.log_init, tm.log_diff, tm.grad_init, tm.grad_diff
    log_w = torch.zeros_like(li)  # [C, N]
    eps = torch.as_tensor(step_size, dtype=li.dtype, device=li.device).expand_as(li)  # [C, N]
    inv_mass = torch.ones_like(u)
    acc_sum, trace = torch.zeros_like(li), []
    for t in range(1, len(betas)):
        beta = betas[t]
        log_w = log_w + (beta - betas[t - 1]) * ld
        if step_sizes is not None:
            eps = step_sizes[t - 1].expand_as(li)

        def fn(q, beta=beta):
            tq = pot.terms(q)
            return (tq.log_init + beta * tq.log_diff, tq.grad_init + beta * tq.grad_diff,
                    (tq.log_init, tq.log_diff, tq.grad_init, tq.grad_diff))

        u, _, _, (li, ld, gi, gd), acc = hmc_step(u, li + beta * ld, gi + beta * gd,
                                                  (li, ld, gi, gd), fn, eps, num_leapfrog,
                                                  inv_mass)
        acc_sum = acc_sum + acc
        trace.append(eps)
        if bar is not None:
            bar.update(1)
        if step_sizes is None:
            eps = eps * torch.exp(adapt_rate * (acc - target_accept))
    return Annealed(log_w, u, acc_sum / max(len(betas) - 1, 1), torch.stack(trace))


def pilot_step_sizes(pot: Potential, betas: torch.Tensor, num_chains: int, *,
                     progress: bool | None = False, desc: str = "ais pilot",
                     **opts) -> torch.Tensor:
    """Per-datapoint step-size schedule ``[T, 1, N]`` from a pilot AIS run.

    The pilot first tunes its chains' step sizes for f_0 (:data:`PILOT_WARMUP` transitions at
    ``betas[0]``), then anneals along ``betas`` adapting each chain online at the rate
    :data:`PILOT_RATE`; the schedule is the geometric mean over its chains. (Without the warm-up,
    the pilot spent the first temperatures growing its step sizes from ``step_size``, and the
    s.e. of AIS on the 2-D decoder model was 30% larger.) A schedule of fewer than
    :data:`MIN_PILOT_TRANSITIONS` steps is run with every temperature repeated (each step size is
    the one reached at the last repeat), so that short schedules get adapted step sizes too.
    ``progress`` shows a bar ``desc`` over the pilot's transitions.
    """
    rate = opts.pop("adapt_rate", PILOT_RATE)
    t = len(betas) - 1
    reps = max(1, math.ceil(MIN_PILOT_TRANSITIONS / t))
    path = torch.cat([betas[:1], betas[1:].repeat_interleave(reps)]) if reps > 1 else betas
    with stage(progress, desc, total=PILOT_WARMUP + len(path) - 1, unit="step") as b:
        warm = anneal(pot, pot.sample_init(num_chains), betas[:1].expand(PILOT_WARMUP + 1),
                      adapt_rate=max(rate, 0.25), bar=b, **opts)
        opts["step_size"] = warm.step_sizes[-1]
        pilot = anneal(pot, warm.u, path, adapt_rate=rate, bar=b, **opts)
    steps = pilot.step_sizes[reps - 1 :: reps]  # [T, C, N]
    return steps.log().mean(1, keepdim=True).exp()


def log_mean_weight(log_w: torch.Tensor, groups: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(log mean_c w_c ``[N]``, its standard error ``[N]``) from log weights ``[C, N]``.

    The chains are split into ``groups`` parts (needing at least 2 chains in each; else the
    delta method over all chains): the s.e. is the larger of the spread of the parts'
    ``log mean w`` and the largest part's delta-method s.e., over sqrt(groups).
    """
    c = log_w.shape[0]
    est = logmeanexp(log_w, dim=0)  # [N]
    if groups < 2 or c < 2 * groups:
        return est, delta_stderr(est + math.log(c), torch.logsumexp(2 * log_w, 0), c)
    parts = torch.tensor_split(log_w, groups, dim=0)
    ests = torch.stack([torch.logsumexp(p, 0) - math.log(p.shape[0]) for p in parts])  # [E, N]
    deltas = torch.stack([delta_stderr(torch.logsumexp(p, 0), torch.logsumexp(2 * p, 0),
                                       p.shape[0]) for p in parts])
    se = torch.maximum(ests.std(0), deltas.max(0).values) / math.sqrt(groups)
    return est, se


def check_acceptance(accept_rate: torch.Tensor, what: str, *, target: float,
                     stacklevel: int = 4) -> None:
    """Raise an :class:`ppvae.AISWarning` for datapoints whose mean acceptance is far off.

    ``accept_rate [C, N]``; a datapoint is flagged when its mean over chains lies outside
    :data:`~ppvae.core.diagnostic_warnings.AIS_ACCEPT_RANGE`. The message counts the datapoints
    and the chains outside it and gives the observed acceptance.
    """
    lo, hi = AIS_ACCEPT_RANGE
    per_point = accept_rate.mean(0)  # [N]
    bad = (per_point < lo) | (per_point > hi)
    if not bool(bad.any()):
        return
    c, n = accept_rate.shape
    chains = int(((accept_rate < lo) | (accept_rate > hi)).sum())
    idx = bad.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:5])) + (", ..." if len(idx) > 5 else "")
    low = bool((per_point[bad] < lo).any())
    advice = ("the chains barely move between temperatures: the pilot's step sizes are too "
              "large there (a log density with sharp regions?)" if low else
              "the step sizes stayed small: lengthen the schedule (num_steps) so the pilot can "
              "adapt them")
    warn(AISWarning,
         f"{what}: mean acceptance outside [{lo}, {hi}] (target {target}) on "
         f"{int(bad.sum())}/{n} datapoints (datapoint {shown}) and {chains}/{c * n} chains; "
         f"observed per-datapoint acceptance {float(per_point.min()):.2f} to "
         f"{float(per_point.max()):.2f} (median {float(per_point.median()):.2f}): {advice}",
         stacklevel=stacklevel)


@evaluates
def ais(model, x: torch.Tensor, *, num_steps: int = 2000, num_chains: int = 256,
        guide=None, kind: str = "sigmoid", num_leapfrog: int = 1, step_size: float = 0.1,
        target_accept: float = 0.65, pilot_chains: int = 4, bdmc: bool = False,
        max_gap: float | None = None, progress: bool | None = None,
        model_kwargs: Mapping[str, Any] | None = None) -> AISResult:
    """AIS estimate of log p(x_n) for every datapoint of ``x``.

    Args:
        model: a model keeping the ppvae contract (continuous latents).
        x: data ``[N, ...]``; computations follow its device and dtype.
        num_steps: intermediate distributions T (the schedule has T + 1 temperatures).
        num_chains: independent AIS chains per datapoint (C).
        guide: initial distribution instead of the prior (a guide keeping the contract).
        kind: "sigmoid" or "linear" schedule.
        num_leapfrog: leapfrog steps per HMC transition.
        step_size: initial HMC step size, before the pilot's adaptation.
        target_accept: acceptance rate the step-size adaptation aims at.
        pilot_chains: chains of a pilot run whose per-chain adapted step sizes (averaged per
            datapoint) fix the schedule of the real run, so that its kernels do not depend on
            its own chains and the estimate stays unbiased; 0 adapts online in the run itself.
        bdmc: also run :func:`ppvae.bdmc` with these settings (and guide) on data simulated
            like ``x`` and attach its gap (:func:`ppvae.infer.bdmc.certify`); it costs two
            more AIS runs. An amortized guide meets the simulated data as it meets any data; a
            guide fitted to ``x`` itself (a local q*) does not fit them, and the gap it gets
            there is likely larger than the error of AIS from it on ``x``.
        max_gap: the BDMC gap above which an :class:`ppvae.AISWarning` says the result is not
            certified (default :data:`ppvae.infer.bdmc.BDMC_GAP_MAX`).
        progress: bars over the pilot's and the run's annealing steps (and BDMC's stages):
            True, False, or None for them only on a terminal (:mod:`ppvae.core.progress`).
        model_kwargs: passed to model and guide.
    """
    kwargs = dict(model_kwargs or {})
    pot = Potential(model, x, guide=guide, model_kwargs=kwargs)
    betas = schedule(num_steps, kind, dtype=x.dtype, device=x.device)
    opts: dict[str, Any] = dict(num_leapfrog=num_leapfrog, step_size=step_size,
                                target_accept=target_accept)
    with torch.no_grad():
        steps = (pilot_step_sizes(pot, betas, pilot_chains, progress=progress, **opts)
                 if pilot_chains else None)
        with stage(progress, "ais", total=num_steps, unit="step") as b:
            run = anneal(pot, pot.sample_init(num_chains), betas, step_sizes=steps, bar=b,
                         **opts)
        values, _ = pot.unflatten(run.u)
    check_acceptance(run.accept_rate, f"AIS ({num_steps} steps, {num_chains} chains)",
                     target=target_accept, stacklevel=5)
    est, se = log_mean_weight(run.log_w)
    settings = dict(num_steps=num_steps, num_chains=num_chains, kind=kind,
                    num_leapfrog=num_leapfrog, target_accept=target_accept,
                    pilot_chains=pilot_chains, init="prior" if guide is None else "guide")
    res = AISResult(est, se, run.log_w, run.accept_rate, run.step_sizes[-1],
                    {k: v.detach() for k, v in values.items()}, num_steps, settings)
    if bdmc:
        from .bdmc import BDMC_GAP_MAX, certify
        from .bdmc import bdmc as run_bdmc

        sandwich = run_bdmc(model, x, guide=guide, num_steps=num_steps, num_chains=num_chains,
                            kind=kind, num_leapfrog=num_leapfrog, step_size=step_size,
                            target_accept=target_accept, pilot_chains=pilot_chains,
                            progress=progress, model_kwargs=kwargs)
        res = certify(res, sandwich, max_gap=BDMC_GAP_MAX if max_gap is None else max_gap,
                      stacklevel=5)
    return res


def ais_log_px(model, x: torch.Tensor, proposal, model_kwargs: dict, *,
               init: str | None = None, **options) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The ``"ais"`` log p(x) estimator of :func:`ppvae.gaps` (registered by ``ppvae``).

    Returns ``(per_datapoint, stderr, description)``. AIS starts from ``proposal`` (the best q*
    of the report) when there is one (``init="guide"``, the default then): E[w] = p(x) from any
    start, and on the 2-D decoder model of ``benchmarks/ais_defaults.py`` the s.e. from the
    encoder was a sixth of that from the prior at the same cost. ``init="prior"`` starts from
    the prior, independent of the proposal. ``options`` go to :func:`ais`.
    """
    if init is None:
        init = "prior" if proposal is None else "guide"
    if init not in ("prior", "guide"):
        raise ValueError(f"init must be 'prior' or 'guide', got {init!r}")
    if init == "guide" and proposal is None:
        raise ValueError("init='guide' needs a proposal")
    res = ais(model, x, guide=proposal if init == "guide" else None, **options,
              model_kwargs=model_kwargs)
    label = f"AIS ({res.num_steps} steps, {res.log_weights.shape[0]} chains, from {init})"
    if res.certificate is not None:
        label += f"; {res.certificate}"
    return res.per_datapoint, res.stderr, label
