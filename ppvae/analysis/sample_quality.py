"""A reconstruction-free score of a model's prior samples: their NLL under a mixture fitted to data.

A generative model p(x) = E_p(z) p(x | z) can reconstruct well and still sample badly: an
autoencoder whose codes do not fill the prior decodes prior draws z ~ p(z) into images unlike
the data. :func:`prior_sample_score` scores the samples x ~ p(x | z), z ~ p(z), without the
encoder: a density is fitted to *held-out* real data, and the score is the mean negative
log-likelihood of the model's samples under it (lower is better), beside the held-out data's
own NLL under the same density as the reference floor.

Why this score:

* No pretrained feature network exists for these small binary images, so the Fréchet Inception
  Distance (Heusel et al. 2017) and its relatives do not apply.
* Parzen-window log-likelihoods are unreliable in high dimensions (Theis, van den Oord and
  Bethge 2016): their value depends mostly on the bandwidth and says little about sample quality.
* A classifier two-sample test (Lopez-Paz and Oquab 2017) separates real from generated images
  with accuracy near 1 for every poor model, so it does not rank them; a mixture's NLL is graded.
* The mixture is fitted to held-out data, not the training data, so a model that memorizes its
  training set is not rewarded for reproducing it.

:class:`BernoulliMixture` is the density for 0/1 data: a mixture of K products of Bernoullis
fitted by EM (Dempster, Laird and Rubin 1977; Bishop 2006, section 9.3.3), in float64, seeded,
with every step a tensor operation over all rows and components. Each component's pixel
probabilities are MAP estimates under a Beta(1 + a, 1 + a) prior (``pseudocount`` a), so a pixel
never on in a component's data does not give samples log-likelihood minus infinity; EM then
increases the log posterior (the log-likelihood when a = 0) at every iteration. Non-binary data
(real values, grey levels) is refused with an error saying so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine

from ..core.contract import ContractError
from ..core.modes import evaluation
from ..core.records import frame, record_repr

__all__ = ["BernoulliMixture", "SampleScore", "model_samples", "prior_sample_score"]

_EPS = 1e-12  # probabilities are kept in [eps, 1 - eps] inside logarithms


def _binary_rows(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` as float64 rows ``[N, D]``, checked to hold only 0 and 1."""
    rows = x.reshape(x.shape[0], -1).to(torch.float64)
    if rows.shape[0] == 0 or not bool(((rows == 0) | (rows == 1)).all()):
        raise ValueError(f"{what} must be non-empty 0/1 data: a Bernoulli mixture scores "
                         "binary data only (binarize it, e.g. load_dataset(..., "
                         "binarize='static'); a real-valued likelihood is not supported)")
    return rows


class BernoulliMixture:
    """A mixture of ``components`` products of Bernoullis, fitted by EM (module docstring).

    Args:
        components: K, the number of mixture components.
        pseudocount: a >= 0 of the Beta(1 + a, 1 + a) prior on each pixel probability.
        max_iter: EM iterations at most.
        tol: stop when the objective per datapoint rose less than this per iteration over the
            last ``check_every`` iterations.
        check_every: iterations between convergence checks (one host sync each).
        seed: seeds the initial component means (K distinct data rows, softened).
    """

    def __init__(self, components: int = 10, *, pseudocount: float = 1.0, max_iter: int = 500,
                 tol: float = 1e-8, check_every: int = 10, seed: int = 0):
        if components < 1 or pseudocount < 0 or max_iter < 1 or check_every < 1:
            raise ValueError(f"need components >= 1, pseudocount >= 0, max_iter >= 1 and "
                             f"check_every >= 1; got {components}, {pseudocount}, {max_iter}, "
                             f"{check_every}")
        self.components, self.pseudocount, self.seed = components, pseudocount, seed
        self.max_iter, self.tol, self.check_every = max_iter, tol, check_every
        self.weights: torch.Tensor | None = None  # [K] mixing proportions
        self.probs: torch.Tensor | None = None  # [K, D] pixel probabilities
        self.history: torch.Tensor | None = None  # [T] EM objective per datapoint, per iteration
        self.converged = False

    def __repr__(self) -> str:
        """Components, pseudocount and the fit's state in one line."""
        state = "not fitted" if self.history is None else (
            f"{self.history.numel()} EM iterations, {'' if self.converged else 'not '}converged, "
            f"objective {float(self.history[-1]):.4f} per datapoint")
        return f"BernoulliMixture(K={self.components}, pseudocount={self.pseudocount:g}; {state})"

    def _joint(self, x: torch.Tensor, weights: torch.Tensor, probs: torch.Tensor
               ) -> torch.Tensor:
        """``log pi_k + log p(x_n | k)``: ``[N, K]``."""
        p = probs.clamp(_EPS, 1 - _EPS)
        return weights.clamp_min(_EPS).log() + x @ p.log().T + (1 - x) @ (-p).log1p().T

    def _log_prior(self, probs: torch.Tensor) -> torch.Tensor:
        """Log density of the Beta(1 + a, 1 + a) prior, up to a constant."""
        p = probs.clamp(_EPS, 1 - _EPS)
        return self.pseudocount * (p.log() + (-p).log1p()).sum()

    def fit(self, x: torch.Tensor) -> BernoulliMixture:
        """Fit to 0/1 rows ``x [N, ...]`` (flattened per row); returns ``self``."""
        x = _binary_rows(x, "the data the mixture is fitted to")
        n, k, a = x.shape[0], self.components, self.pseudocount
        if n < k:
            raise ValueError(f"fitting {k} components needs at least {k} rows, got {n}")
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        rows = torch.randperm(n, generator=gen, device=x.device)[:k]
        probs = 0.5 * x[rows] + 0.25  # [K, D] softened data rows
        weights = x.new_full((k,), 1.0 / k)  # [K]
        history = []
        self.converged = False
        for it in range(self.max_iter):
            joint = self._joint(x, weights, probs)  # [N, K]
            ll = torch.logsumexp(joint, dim=1)  # [N]
            history.append((ll.sum() + self._log_prior(probs)) / n)
            resp = (joint - ll[:, None]).exp()  # [N, K] responsibilities
            counts = resp.sum(0)  # [K]
            weights = counts / n
            probs = (resp.T @ x + a) / (counts[:, None] + 2 * a).clamp_min(_EPS)  # [K, D]
            if (it + 1) % self.check_every == 0 and it + 1 > self.check_every:
                gain = float(history[-1] - history[-1 - self.check_every])
                if gain < self.tol * self.check_every:
                    self.converged = True
                    break
        self.weights, self.probs = weights, probs
        self.history = torch.stack(history)
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of each 0/1 row of ``x [N, ...]`` under the mixture: ``[N]`` float64."""
        if self.weights is None or self.probs is None:
            raise RuntimeError("the mixture is not fitted: call fit(data) first")
        rows = _binary_rows(x, "the rows scored")
        if rows.shape[1] != self.probs.shape[1]:
            raise ValueError(f"the mixture was fitted to rows of {self.probs.shape[1]} values; "
                             f"got rows of {rows.shape[1]}")
        return torch.logsumexp(self._joint(rows.to(self.probs.device), self.weights,
                                           self.probs), dim=1)


@dataclass(frozen=True)
class SampleScore:
    """NLL of a model's samples under a mixture fitted to held-out data, beside the data's own."""

    sample_nll: float  # mean NLL of the model's samples (nats per sample; lower is better)
    sample_stderr: float  # its standard error over samples
    data_nll: float  # mean NLL of the held-out data under the mixture fitted to it (the floor)
    data_stderr: float  # its standard error over rows
    per_sample: torch.Tensor  # [M] NLL of each sample
    components: int  # K of the mixture
    latents: str  # "prior" (z ~ p(z)) or "given" (the latents argument)

    __repr__ = record_repr

    @property
    def gap(self) -> float:
        """``sample_nll - data_nll``: how far the samples are from the data (nats)."""
        return self.sample_nll - self.data_nll

    def to_dataframe(self):
        """One row per sample (pandas; index ``sample``): column ``nll``."""
        return frame({"nll": self.per_sample}, index_name="sample")


def _observed_name(tr, observed: str | None) -> str:
    """The model's observed site (unobserved by ``poutine.uncondition``)."""
    names = [n for n, s in tr.nodes.items()
             if s["type"] == "sample" and s["infer"].get("was_observed", False)]
    if observed is None:
        if len(names) != 1:
            raise ContractError(f"the model has observed sites {names}: choose one with "
                                "observed=")
        return names[0]
    if observed not in names:
        raise ContractError(f"the model has no observed site '{observed}' (observed: {names})")
    return observed


def model_samples(model, template: torch.Tensor, num_samples: int, *,
                  latents: Mapping[str, torch.Tensor] | None = None, observed: str | None = None,
                  model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Draws x ~ p(x | z), z ~ p(z) (or z = ``latents``): ``[num_samples, ...]``.

    The model runs, unconditioned, on ``num_samples`` rows of zeros shaped like a row of
    ``template``; latent sites in ``latents`` (``{site: [num_samples, ...]}``) take those values,
    the others are drawn from the (conditional) prior.
    """
    zeros = template.new_zeros((num_samples, *template.shape[1:]))
    fn = poutine.uncondition(model)
    if latents:
        fn = poutine.condition(fn, data=dict(latents))
    try:
        with torch.no_grad(), evaluation(model):
            tr = poutine.trace(fn).get_trace(zeros, **dict(model_kwargs or {}))
    except NotImplementedError as e:
        raise ContractError(f"the model's prior cannot be sampled (an improper prior?): {e}; "
                            "give the codes to decode as latents={site: draws}") from e
    return tr.nodes[_observed_name(tr, observed)]["value"]


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    n = v.numel()
    return float(v.mean()), float(v.std() / math.sqrt(n)) if n > 1 else math.nan


def prior_sample_score(model, data: torch.Tensor, *, num_samples: int = 1000,
                       components: int = 10, seed: int = 0,
                       latents: Mapping[str, torch.Tensor] | None = None,
                       mixture: BernoulliMixture | None = None, observed: str | None = None,
                       model_kwargs: Mapping[str, Any] | None = None) -> SampleScore:
    """Mean NLL of ``num_samples`` model samples under a Bernoulli mixture fitted to ``data``.

    Args:
        model: a model keeping the ppvae contract with a Bernoulli (0/1) likelihood.
        data: *held-out* 0/1 rows ``[M, ...]`` (not the training data; module docstring).
        num_samples: model samples scored.
        components: K of the mixture fitted to ``data``.
        seed: seeds the mixture's initialization and the model's draws (global RNG restored).
        latents: codes to decode instead of prior draws, ``{site: [num_samples, ...]}`` (e.g.
            N(0, I) codes for a model with an improper prior).
        mixture: a mixture already fitted to held-out data (then ``data`` only gives the floor
            and the row shape, and ``components`` is ignored).
        observed: the observed site (default: the model's only one).
        model_kwargs: the model's keyword arguments, ``num_samples`` rows each.

    Returns:
        A :class:`SampleScore` (sample and data NLL with standard errors, per-sample NLL).
    """
    rows = _binary_rows(data, "data")
    if mixture is None:
        mixture = BernoulliMixture(components, seed=seed).fit(rows)
    devices = [data.device] if data.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        x = model_samples(model, data, num_samples, latents=latents, observed=observed,
                          model_kwargs=model_kwargs)
    per_sample = -mixture.log_prob(_binary_rows(x, "the model's samples"))  # [num_samples]
    data_nll = -mixture.log_prob(rows)  # [M]
    return SampleScore(*_mean_se(per_sample), *_mean_se(data_nll), per_sample,
                       mixture.components, "prior" if not latents else "given")
