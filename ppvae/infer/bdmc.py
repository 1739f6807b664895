"""Bidirectional Monte Carlo: a sandwich around log p(x) on data simulated from the model.

Grosse, Ghahramani and Adams (2015); Wu, Burda, Salakhutdinov and Grosse (2017) for decoder-based
models. For ``(z*, x) ~ p(z) p(x | z)``, z* is an exact draw from p(z | x). Forward AIS from the
prior gives a stochastic lower bound on log p(x); reverse AIS, started at z* and annealed from
the posterior back to the prior, gives an unbiased estimate of 1 / p(x), so
``-log mean_c w_rev`` is a stochastic upper bound. The gap between the two bounds the error of
forward AIS with the same schedule on data like this: lengthen the schedule until it is small.

:func:`bdmc` simulates the data from the model itself (``x`` serves only as a template for
shapes, device and keyword arguments) or takes ``z`` as the known generating latent of ``x``.
With ``guide=`` both directions run on the path from that guide instead of the prior (any
initial distribution keeps both bounds valid), so BDMC certifies AIS started from a guide.

:func:`certify` attaches a BDMC gap to an :class:`~ppvae.infer.ais.AISResult` run with the same
settings (``ais(..., bdmc=True)`` does both), so the gap is printed next to the AIS number, and
raises an :class:`ppvae.AISWarning` when it exceeds :data:`BDMC_GAP_MAX`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pyro import poutine

from ..core.contract import ContractError
from ..core.diagnostic_warnings import AISWarning, warn
from ..core.estimate import mean_stderr
from ..core.modes import evaluates
from ..core.potential import Potential, prior_guide
from ..core.progress import stage
from ..core.records import frame
from .ais import (
    AISResult,
    BDMCCertificate,
    anneal,
    check_acceptance,
    log_mean_weight,
    pilot_step_sizes,
    schedule,
)

__all__ = ["BDMC_GAP_MAX", "BDMCResult", "bdmc", "certify", "simulate"]

# The gap (nats per datapoint) above which AIS is not certified: the size of the gaps the gap
# report measures (approximation gaps of 0.05 to 0.5 nats on the digits, docs/gaps.md), so an
# AIS error as large would swamp them. Wu et al. (2017) lengthened schedules until gaps were
# "well under 1 nat" on MNIST; the MNIST run in docs/performance.md reached 0.13 at 1000 steps.
BDMC_GAP_MAX = 0.1


class BDMCResult(NamedTuple):
    """Per-datapoint sandwich lower <= log p(x) <= upper (each stochastic), with its data."""

    lower: AISResult  # forward AIS: per_datapoint [N], stderr [N]
    upper: AISResult  # reverse AIS: per_datapoint is the upper bound -log mean w_rev, [N]
    x: torch.Tensor  # [N, ...] the simulated data
    z: dict[str, torch.Tensor]  # the generating latents, site -> [*mid, N, *event]

    @property
    def gap(self) -> torch.Tensor:
        """The gap ``upper - lower`` per datapoint ``[N]``."""
        return self.upper.per_datapoint - self.lower.per_datapoint

    @property
    def mean_gap(self) -> float:
        """Average of :attr:`gap` over datapoints."""
        return float(self.gap.mean())

    @property
    def gap_stderr(self) -> torch.Tensor:
        """Monte Carlo s.e. of :attr:`gap` per datapoint ``[N]`` (independent directions)."""
        return (self.lower.stderr.pow(2) + self.upper.stderr.pow(2)).sqrt()

    @property
    def mean_gap_stderr(self) -> float:
        """Monte Carlo s.e. of :attr:`mean_gap`."""
        return mean_stderr(self.gap_stderr)

    def to_dataframe(self):
        """A pandas DataFrame with one row per simulated datapoint (index ``datapoint``).

        Columns (nats): ``lower`` and ``lower_stderr`` (forward AIS), ``upper`` and
        ``upper_stderr`` (reverse AIS), ``gap`` and ``gap_stderr``.
        """
        return frame({"lower": self.lower.per_datapoint, "lower_stderr": self.lower.stderr,
                      "upper": self.upper.per_datapoint, "upper_stderr": self.upper.stderr,
                      "gap": self.gap, "gap_stderr": self.gap_stderr})

    def __repr__(self) -> str:
        return (f"BDMCResult({self.lower.mean:.4f} <= log p(x) <= {self.upper.mean:.4f}, mean "
                f"gap {self.mean_gap:.4f} ± {self.mean_gap_stderr:.4f} nats over "
                f"{self.x.shape[0]} datapoints, {self.lower.num_steps} steps)")


def simulate(model, x: torch.Tensor, *, model_kwargs: Mapping[str, Any] | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Draw ``(x_sim, z)`` from the model, with ``x`` as the template for N, shapes and device.

    The model must have exactly one observed site (its ``obs=x``).
    """
    kwargs = dict(model_kwargs or {})
    with torch.no_grad():
        tr = poutine.trace(poutine.uncondition(model)).get_trace(x, **kwargs)
    observed = [n for n, s in tr.nodes.items()
                if s["type"] == "sample" and s["infer"].get("was_observed", False)]
    if len(observed) != 1:
        raise ContractError(
            f"bdmc can simulate data only from a model with one observed site; found "
            f"{observed}: simulate x yourself and pass z=")
    x_sim = tr.nodes[observed[0]]["value"].to(x.dtype)
    if x_sim.shape != x.shape:
        raise ContractError(f"observed site '{observed[0]}' has shape {tuple(x_sim.shape)} but "
                            f"x has shape {tuple(x.shape)}; bdmc needs obs=x")
    latent = [n for n, s in poutine.trace(prior_guide(model)).get_trace(x, **kwargs).nodes.items()
              if s["type"] == "sample"]
    return x_sim, {n: tr.nodes[n]["value"] for n in latent}


@evaluates
def bdmc(model, x: torch.Tensor, *, z: dict[str, torch.Tensor] | torch.Tensor | None = None,
         guide=None, num_steps: int = 2000, num_chains: int = 256, kind: str = "sigmoid",
         num_leapfrog: int = 1, step_size: float = 0.1, target_accept: float = 0.65,
         pilot_chains: int = 4, progress: bool | None = None,
         model_kwargs: Mapping[str, Any] | None = None) -> BDMCResult:
    """Forward and reverse AIS on simulated data: the per-datapoint BDMC sandwich.

    Args:
        model: a model keeping the ppvae contract (continuous latents).
        x: with ``z=None``, a template: data of the same shape are simulated from the model.
            With ``z``, data simulated from the model with latent ``z``.
        z: the generating latents, site -> ``[*mid, N, *event]`` (a tensor for one site).
        guide: start forward AIS from (and end reverse AIS at) this guide instead of the
            prior, evaluated on the simulated data, as ``ais(..., guide=)`` does.
        num_steps: intermediate distributions T, as in :func:`ppvae.ais`.
        num_chains: AIS chains per datapoint in each direction.
        kind: "sigmoid" or "linear" schedule, as in :func:`ppvae.ais`.
        num_leapfrog: leapfrog steps per HMC transition.
        step_size: initial step size of the pilot run's adaptation.
        target_accept: acceptance rate the pilot run's adaptation aims at.
        pilot_chains: chains of the forward pilot run. Both directions use the same
            temperatures and the pilot's step sizes (per datapoint, fixed), so neither
            direction adapts on its own chains (online adaptation visibly biases reverse AIS).
        progress: a bar per stage (pilot, forward chains, reverse chains) over its annealing
            steps: True, False, or None for them only on a terminal (:mod:`ppvae.core.progress`).
        model_kwargs: passed to the model.
    """
    kwargs = dict(model_kwargs or {})
    if z is None:
        x, z = simulate(model, x, model_kwargs=kwargs)
    pot = Potential(model, x, guide=guide, model_kwargs=kwargs)
    if isinstance(z, torch.Tensor):
        if len(pot.sites) != 1:
            raise ValueError(f"the model has latent sites {[s.name for s in pot.sites]}; "
                             "pass z as a dict site -> tensor")
        z = {pot.sites[0].name: z}
    missing = [s.name for s in pot.sites if s.name not in z]
    if missing:
        raise ValueError(f"z lacks the model's latent site(s) {missing}")
    betas = schedule(num_steps, kind, dtype=x.dtype, device=x.device)
    opts: dict[str, Any] = dict(num_leapfrog=num_leapfrog, step_size=step_size,
                                target_accept=target_accept)
    with torch.no_grad():
        steps = pilot_step_sizes(pot, betas, pilot_chains, progress=progress,
                                 desc="bdmc pilot", **opts)  # [T, 1, N]
        with stage(progress, "bdmc forward", total=num_steps, unit="step") as b:
            fwd = anneal(pot, pot.sample_init(num_chains), betas, step_sizes=steps, bar=b,
                         **opts)
        # reverse transition t targets betas[T - t]; the forward one for betas[j] is steps[j - 1]
        t = num_steps
        rev_idx = (t - 1 - torch.arange(1, t + 1, device=steps.device)).clamp(min=0)
        u_star = pot.flatten(pot.with_chains(z, num_chains)).detach()  # [C, N, D] all at z*
        with stage(progress, "bdmc reverse", total=num_steps, unit="step") as b:
            rev = anneal(pot, u_star, betas.flip(0), step_sizes=steps[rev_idx], bar=b, **opts)
        vals_f, _ = pot.unflatten(fwd.u)
        vals_r, _ = pot.unflatten(rev.u)
    check_acceptance(fwd.accept_rate, f"BDMC forward AIS ({num_steps} steps, {num_chains} "
                     "chains)", target=target_accept, stacklevel=5)
    lo, lo_se = log_mean_weight(fwd.log_w)
    inv, inv_se = log_mean_weight(rev.log_w)  # estimates log (1 / p(x))
    settings = dict(num_steps=num_steps, num_chains=num_chains, kind=kind,
                    num_leapfrog=num_leapfrog, target_accept=target_accept,
                    pilot_chains=pilot_chains, init="prior" if guide is None else "guide")
    lower = AISResult(lo, lo_se, fwd.log_w, fwd.accept_rate, steps[-1, 0], vals_f, num_steps,
                      settings)
    upper = AISResult(-inv, inv_se, rev.log_w, rev.accept_rate, steps[0, 0], vals_r, num_steps,
                      settings)
    return BDMCResult(lower, upper, x, {k: v.detach() for k, v in z.items()})


def certify(result: AISResult, sandwich: BDMCResult, *, max_gap: float = BDMC_GAP_MAX,
            stacklevel: int = 3) -> AISResult:
    """``result`` with the BDMC gap of ``sandwich`` attached (printed with its number).

    ``sandwich`` must come from :func:`bdmc` with the settings of ``result`` (steps, chains,
    schedule, leapfrog steps, target acceptance, pilot chains, prior or guide start): a
    ``ValueError`` names any difference. Unless the mean gap plus two standard errors is within
    ``max_gap`` nats, an :class:`ppvae.AISWarning` says that AIS with these settings is not
    certified (the gap too large, or too uncertain to tell).
    """
    mine, theirs = dict(result.settings or {}), dict(sandwich.lower.settings or {})
    if not mine or not theirs:
        raise ValueError("certify needs results of ppvae.ais and ppvae.bdmc (with their settings)")
    diff = {k: (mine.get(k), theirs.get(k)) for k in sorted(mine.keys() | theirs.keys())
            if mine.get(k) != theirs.get(k)}
    if diff:
        raise ValueError("the BDMC run has other settings than the AIS run, so its gap does not "
                         "certify it: " + ", ".join(f"{k} {a} (AIS) vs {b} (BDMC)"
                                                    for k, (a, b) in diff.items()))
    cert = BDMCCertificate(sandwich.mean_gap, sandwich.mean_gap_stderr, sandwich.x.shape[0],
                           max_gap)
    if not cert.certified:
        big = cert.gap > max_gap
        warn(AISWarning,
             f"AIS ({mine['num_steps']} steps, {mine['num_chains']} chains) is not certified by "
             f"BDMC: the mean gap between reverse and forward AIS on {cert.num_data} simulated "
             f"datapoints is {cert.gap:.3f} ± {cert.gap_stderr:.3f} nats, "
             + (f"above {max_gap:g}; its log p(x) may be low by as much: lengthen the schedule "
                "(num_steps) or start from a guide" if big else
                f"too uncertain to be shown below {max_gap:g} (gap + 2 s.e. = {cert.upper:.3f}): "
                "use more chains or more simulated datapoints"), stacklevel=stacklevel)
    return result._replace(certificate=cert)
