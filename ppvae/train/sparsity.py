"""The KL-to-target-rate sparsity penalty of a sparse autoencoder, as a training objective.

Ng's sparse autoencoder notes (CS294A; the rate penalty of Lee, Ekanadham and Ng 2008) keep the
mean activation of every code unit near a small target rate rho:

    loss = base loss + beta * sum_j KL(rho || rho_hat_j),
    KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r)),

with rho_hat_j the mean activation of unit j over the minibatch. The penalty couples the
datapoints of a minibatch, so it is not a per-datapoint density of any model: it belongs to the
training procedure, not to the model (beta-VAE and KL warm-up live here for the same reason,
:mod:`ppvae.train.objectives`). :func:`sparsity_kl` wraps any objective (default the ELBO) and
adds it. The model stays pure: evaluating the trained pair is evaluating its own densities.

How the penalty sees the code. The base objective runs the guide as it always does; the guide
handed to it is the user's guide run under :class:`CodeRecorder`, a Pyro handler that records
the value of the code site as the guide samples it (gradients flow through it). The handler is
pushed only while the guide runs, *inside* the base objective's own handlers, so it is innermost
for the guide's sites and the ELBO's one-frame training path (which requires that no foreign
handler be active when it starts) is kept.

Scale. ppvae's objectives are minus ``data_scale`` times the sum over the minibatch's
datapoints (:mod:`ppvae.train.scaling`); the penalty, a minibatch quantity, counts once per
datapoint, ``data_scale * B * beta * KL``, which with fit's ``data_scale = 1 / B`` is Ng's
``beta * KL`` added to the mean per-datapoint loss.

The rate is a mean activation, so the codes must lie in [0, 1] (sigmoid codes): a guide that
declares a ``code_range`` outside it (:class:`guides.SparseEncoder` with relu codes) is refused
at once, and the values of any other guide's code are checked on its first minibatch (one
host sync per guide, never per step).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.poutine.messenger import Messenger

from ..core.contract import PairInfo
from .objectives import ELBO
from .scaling import Factor, Objective, WrappedObjective

__all__ = ["CodeRecorder", "SparsityKL", "rate_kl", "recording", "sparsity_kl"]

_EPS = 1e-6  # rho_hat is clamped to [eps, 1 - eps]: a saturated unit keeps a finite penalty


class CodeRecorder(Messenger):
    """Record the value of the sample site ``site`` each time it is sampled.

    Args:
        site: the site's name.

    Attributes:
        values: the recorded values, in order (one per guide run: a run per particle when the
            particles are not vectorized).
        plates: for each value, the names of the plates enclosing the site.
    """

    def __init__(self, site: str):
        super().__init__()
        self.site = site
        self.values: list[torch.Tensor] = []
        self.plates: list[tuple[str, ...]] = []

    def _pyro_post_sample(self, msg) -> None:
        if msg["name"] == self.site:
            self.values.append(msg["value"])
            self.plates.append(tuple(f.name for f in msg["cond_indep_stack"]))


def recording(guide: Callable, recorder: CodeRecorder) -> Callable:
    """``guide`` run under ``recorder`` (pushed innermost, only while the guide runs)."""

    def recorded_guide(*args: Any, **kwargs: Any) -> Any:
        with recorder:
            return guide(*args, **kwargs)

    recorded_guide.__wrapped__ = guide  # type: ignore[attr-defined]
    return recorded_guide


def rate_kl(rate: float, mean_activation: torch.Tensor) -> torch.Tensor:
    """``sum_j KL(Bernoulli(rate) || Bernoulli(mean_activation_j))`` over the last dimension."""
    r = mean_activation.clamp(_EPS, 1 - _EPS)
    kl = rate * torch.log(rate / r) + (1 - rate) * torch.log((1 - rate) / (1 - r))
    return kl.sum(-1)


@dataclass(frozen=True)
class SparsityKL(WrappedObjective):
    """``base`` plus ``weight * sum_j KL(rate || rho_hat_j)`` of the code site ``site``."""

    rate: float = 0.05
    weight: float = 1.0
    site: str | None = None
    _checked: Any = field(default_factory=weakref.WeakSet, init=False, repr=False,
                          compare=False)

    def __post_init__(self):
        if not 0 < self.rate < 1:
            raise ValueError(f"the target rate is a mean activation in (0, 1), got {self.rate}")
        if not self.weight >= 0:
            raise ValueError(f"the sparsity weight must be >= 0, got {self.weight}")

    @property
    def name(self) -> str:  # type: ignore[override]  # read-only here; Objective.name a default
        """``"sparsity_kl-"`` and the base objective's name, e.g. ``"sparsity_kl-elbo"``."""
        return f"sparsity_kl-{self.base.name}"

    def describe(self) -> str:
        """E.g. ``"sparsity_kl(rate 0.05, weight 1, elbo)"``."""
        where = f", site {self.site}" if self.site is not None else ""
        return (f"sparsity_kl(rate {self.rate:g}, weight {self.weight:g}{where}, "
                f"{self.base.describe()})")

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0, scalars=None):
        """The base's loss plus ``data_scale * B * weight * KL`` (module docstring, "Scale")."""
        site = self._site(info)
        self._check_declared(guide, site)
        recorder = CodeRecorder(site)
        extra = {"scalars": scalars} if scalars is not None else {}
        base = self.base.loss(model, recording(guide, recorder), x, info=info,
                              data_scale=data_scale, train_size=train_size, step=step,
                              kwargs=kwargs, latent_scale=latent_scale, **extra)
        code = self._code(recorder, info, guide)  # [S, K] every recorded code row
        penalty = rate_kl(self.rate, code.mean(0))
        return base + (data_scale * x.shape[0] * self.weight) * penalty

    def _site(self, info: PairInfo) -> str:
        if self.site is None:
            if len(info.latent) != 1:
                raise ValueError(f"sparsity_kl needs the code site, and the pair has latent "
                                 f"sites {list(info.latent)}: pass site=")
            return info.latent[0]
        if self.site not in info.latent:
            raise ValueError(f"sparsity_kl: no latent site '{self.site}'; the pair's latent "
                             f"sites are {list(info.latent)}")
        return self.site

    def _check_declared(self, guide, site: str) -> None:
        """Refuse a guide whose declared ``code_range`` is not inside [0, 1]."""
        declared = getattr(guide, "code_range", None)
        if declared is not None and not (declared[0] >= 0 and declared[1] <= 1):
            activation = getattr(guide, "activation", None)
            what = f"{activation} codes" if isinstance(activation, str) else "codes"
            raise ValueError(
                f"sparsity_kl penalizes the mean activation of site '{site}', which must lie in "
                f"[0, 1], but the guide's {what} range over {list(declared)}: use sigmoid codes "
                "(SparseEncoder(..., activation='sigmoid'))")

    def _code(self, recorder: CodeRecorder, info: PairInfo, guide) -> torch.Tensor:
        """The recorded code values as rows ``[S, K]``, checked on the guide's first call."""
        if not recorder.values:
            raise ValueError(f"sparsity_kl: the guide sampled no site '{recorder.site}'")
        rows = torch.cat([v.reshape(-1, v.shape[-1]) for v in recorder.values])  # [S, K]
        try:
            first = guide not in self._checked
        except TypeError:  # not weakly referenceable: checked every call
            first = True
        if first:
            self._check_values(recorder, info, rows)
            try:
                self._checked.add(guide)
            except TypeError:
                pass
        return rows

    def _check_values(self, recorder: CodeRecorder, info: PairInfo, rows: torch.Tensor) -> None:
        site = recorder.site
        if not any(info.data_plate in plates for plates in recorder.plates):
            raise ValueError(f"sparsity_kl: the code site '{site}' must be inside the "
                             f"per-datapoint plate '{info.data_plate}' (a code per datapoint)")
        bad = ((rows < 0) | (rows > 1)).any()
        if bool(bad):  # one host sync, on the guide's first minibatch only
            lo, hi = float(rows.detach().min()), float(rows.detach().max())
            raise ValueError(
                f"sparsity_kl penalizes the mean activation of site '{site}', which must lie in "
                f"[0, 1], but its codes range over [{lo:.4g}, {hi:.4g}]: use sigmoid codes "
                "(SparseEncoder(..., activation='sigmoid'))")


def sparsity_kl(rate: float = 0.05, weight: float = 1.0, base: Objective | None = None,
                site: str | None = None) -> SparsityKL:
    """The KL-to-target-rate sparsity objective (Ng's sparse autoencoder; Lee et al. 2008).

    Args:
        rate: the target mean activation rho of every code unit, in (0, 1).
        weight: beta, the penalty's weight (>= 0).
        base: the objective the penalty is added to (default ``ppvae.ELBO()``).
        site: the code's latent site (default: the pair's only latent site).

    Returns:
        A :class:`SparsityKL` objective for :func:`ppvae.fit`: ``base`` plus
        ``weight * sum_j KL(rate || rho_hat_j)``, rho_hat_j the minibatch mean of code unit j.
    """
    return SparsityKL(ELBO() if base is None else base, float(rate), float(weight), site)
