"""Scale is the engine's business: the objective protocol and the handler that enforces it.

A Pyro model may declare a scale of its own: a subsampling plate
(``pyro.plate("data", N, subsample_size=B)`` multiplies its sites by N / B), a
``poutine.scale`` anywhere in model or guide, a Pyro ELBO's own handling. ppvae trains every
pair on one objective whatever it declares: the mean per-datapoint objective of the minibatch,
with global latents (sites outside the per-datapoint plate) counted once for the whole training
set, as Pyro's subsampling convention has it (Hoffman et al. 2013):

    loss = -(1 / B) * (sum over the minibatch's per-datapoint terms + (B / N) * global terms)

where B is the minibatch's rows and N the training rows.

* :class:`EngineScale` is the handler that makes it so. Placed *outermost* around model and guide
  inside each objective, it runs after the user's plates and ``poutine.scale`` handlers and
  overwrites every sample site's ``msg["scale"]`` with the engine's factor: ``local`` inside the
  per-datapoint plate, ``global_`` outside it, times ``latent`` at latent sites (beta-VAE and KL
  warm-up, Higgins et al. 2017, Bowman et al. 2016). User scales never leak into training.
* :class:`Objective` is the protocol fit trains with; its ``loss`` states the scale contract.
* :class:`SiteScale` (``poutine.scale`` restricted to some sites) and :func:`in_plate` remain for
  callers that scale sites on top of an objective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.scale_messenger import ScaleMessenger

from ..core.contract import DATA_PLATE, PairInfo

__all__ = ["EngineScale", "Objective", "SiteScale", "WrappedObjective", "global_factor",
           "in_plate", "inside"]

Factor = float | torch.Tensor


def inside(msg, plate: str) -> bool:
    """Is the message's site inside the plate named ``plate``?"""
    return any(f.name == plate for f in msg["cond_indep_stack"])


def in_plate(plate: str) -> Callable[[dict], bool]:
    """A site filter: is the message's site inside the plate named ``plate``?"""
    def test(msg) -> bool:
        return inside(msg, plate)
    return test


class SiteScale(ScaleMessenger):
    """``poutine.scale`` restricted to the sample sites for which ``which(msg)`` is true."""

    def __init__(self, scale: float, which: Callable[[dict], bool]):
        super().__init__(scale)
        self.which = which

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and self.which(msg):
            super()._process_message(msg)


class EngineScale(Messenger):
    """Set every sample site's scale to the engine's factor, whatever the model declared.

    Args:
        local: the factor of sites inside the per-datapoint plate ``plate``.
        global_: the factor of sites outside it (global latents, global factors).
        latent: an extra factor of latent (unobserved) sites: beta of beta-VAE / KL warm-up; a
            tensor when it is an input of a compiled graph.
        plate: the per-datapoint plate's name (:attr:`ppvae.PairInfo.data_plate`).
        record: a list to which each sample site's message is appended once it has run (the
            sites of one run, as a trace would hold them).
    """

    def __init__(self, local: Factor = 1.0, global_: Factor = 1.0, latent: Factor = 1.0,
                 plate: str = DATA_PLATE, record: list | None = None):
        super().__init__()
        self.local, self.global_, self.latent, self.plate = local, global_, latent, plate
        self.record = record

    def _pyro_sample(self, msg) -> None:
        scale = self.local if inside(msg, self.plate) else self.global_
        if not msg["is_observed"] and not (isinstance(self.latent, float) and self.latent == 1.0):
            scale = scale * self.latent
        msg["scale"] = scale

    def _pyro_post_sample(self, msg) -> None:
        if self.record is not None:
            self.record.append(msg)


class Objective:
    """Base class of fit's objectives: ``loss`` is minus the objective of one minibatch.

    The scale contract every ``loss`` keeps (see the module docstring): with B = ``x.shape[0]``
    and N = ``train_size`` (default B), the loss is
    ``-data_scale * (per-datapoint terms + (B / N) * global terms)``, every scale the model
    declares replaced by the engine's, latent sites' log densities times ``latent_scale``.
    :func:`ppvae.fit` passes ``data_scale = 1 / B`` and ``train_size = N``: minus the mean
    per-datapoint objective.
    """

    name = "objective"
    supports_latent_scale = True  # can ScaledLatents (beta, warm-up) wrap it?
    sums_out_enumerated = False  # does it sum out model sites enumerated in parallel?

    def loss(self, model, guide, x: torch.Tensor, *, info: PairInfo, data_scale: float = 1.0,
             train_size: int | None = None, step: int = 0, kwargs: dict | None = None,
             latent_scale: Factor = 1.0) -> torch.Tensor:
        """Minus the objective of minibatch ``x`` under the engine's scale: a scalar to minimize."""
        raise NotImplementedError

    def scalars(self, step: int) -> tuple[float, ...]:
        """The objective's quantities that change with ``step`` (default none).

        ``fit(jit=True)`` feeds them to its captured graph as inputs, in this order, through
        ``loss(..., scalars=...)``; an objective that declares any must accept that argument.
        """
        return ()

    def describe(self) -> str:
        """What trains, in words (``FitResult.objective``); default the name."""
        return self.name

    def jit_capturable(self) -> str | None:
        """None when ``fit(jit=True)`` can capture ``loss`` as a graph; else why not."""
        return None


@dataclass(frozen=True)
class WrappedObjective(Objective):
    """An objective built around another, ``base``, which answers for it.

    Whether beta can wrap it, whether it sums out enumerated sites, whether ``fit(jit=True)``
    can capture it and its per-step scalars are the base's (a subclass overrides what it
    changes): the wrappers :func:`ppvae.beta_vae` / :func:`ppvae.kl_warmup`,
    :func:`ppvae.denoising` and :func:`ppvae.sparsity_kl`.
    """

    base: Objective

    @property
    def supports_latent_scale(self) -> bool:  # type: ignore[override]  # the base's
        """Whether beta / KL warm-up can wrap it (the base's answer)."""
        return self.base.supports_latent_scale

    @property
    def sums_out_enumerated(self) -> bool:  # type: ignore[override]  # the base's
        """Whether the base objective sums out enumerated sites."""
        return self.base.sums_out_enumerated

    def jit_capturable(self) -> str | None:
        """The base objective's answer."""
        return self.base.jit_capturable()

    def scalars(self, step: int) -> tuple[float, ...]:
        """The base objective's scalars."""
        return self.base.scalars(step)


def global_factor(data_scale: float, batch: int, train_size: int | None) -> float:
    """The factor of global sites: ``data_scale * B / N`` (``data_scale`` when N is unknown)."""
    return data_scale if not train_size else data_scale * batch / train_size
