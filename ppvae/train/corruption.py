"""Denoising: corrupt what the guide sees during training, keep the model pure.

The denoising autoencoder of Vincent et al. (2008) trains an encoder on a corrupted input
x~ ~ C(x~ | x) to reconstruct the clean x. In ppvae's terms the corruption belongs to the
*training procedure*, not to the generative model: :func:`denoising` wraps any objective so that
the guide is run on ``corrupt(x)`` while the model scores the clean ``x``::

    loss = - E_{C(x~|x)} E_{q(z|x~)} [log p(x, z) - log q(z|x~)]    (ELBO base)

With the point-mass guide of :class:`models.Autoencoder` that is the denoising autoencoder's
reconstruction objective; with any VAE it is the denoising VAE of Im et al. (2017), whose bound
on log p(x) they show is still valid (the guide is just a different, input-noised q). The model
and guide themselves are untouched, so the trained pair is evaluated, sampled and analysed on
clean data like any other; :func:`ppvae.reconstruction_error` measures how well it reconstructs
corrupted inputs.

Corruptions (:class:`Corruption`; the noise is drawn from torch's global generator on the data's
device, a fresh draw per training step):

* ``"gaussian"``: additive isotropic noise, x~ = x + level * eps, eps ~ N(0, I) (real data);
* ``"masking"``: each input set to 0 independently with probability ``level`` (the masking noise
  of Vincent et al. 2008, 2010; 25% on MNIST there);
* ``"salt-and-pepper"``: each input, with probability ``level``, replaced by 0 or 1 with equal
  probability (binary data; Vincent et al. 2010).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .scaling import Factor, Objective, WrappedObjective

__all__ = ["CORRUPTIONS", "Corruption", "Denoising", "corrupting", "denoising"]

CORRUPTIONS = ("gaussian", "masking", "salt-and-pepper")


@dataclass(frozen=True)
class Corruption:
    """A corruption process C(x~ | x): ``kind`` (one of :data:`CORRUPTIONS`) at ``level``.

    ``level`` is the noise's standard deviation for ``"gaussian"`` and the probability that an
    input is corrupted for ``"masking"`` and ``"salt-and-pepper"``.
    """

    kind: str = "masking"
    level: float = 0.25

    def __post_init__(self):
        if self.kind not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.kind!r}; choose one of: "
                             f"{', '.join(CORRUPTIONS)}")
        level = float(self.level)
        if self.kind == "gaussian" and not level > 0:
            raise ValueError(f"the gaussian corruption's level is the noise's standard "
                             f"deviation and must be positive, got {self.level}")
        if self.kind != "gaussian" and not 0 < level < 1:
            raise ValueError(f"the {self.kind} corruption's level is the probability that an "
                             f"input is corrupted and must lie in (0, 1), got {self.level}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A corrupted copy of ``x`` (same shape, dtype and device); ``x`` is not modified."""
        if not x.is_floating_point():
            raise TypeError(f"the {self.kind} corruption needs floating-point data, got "
                            f"{x.dtype}")
        if self.kind == "gaussian":
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            return x + self.level * noise
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if self.kind == "masking":
            return x * (u >= self.level).to(x.dtype)
        # salt-and-pepper: u < level picks the corrupted inputs; u < level / 2 of them become 1,
        # the others 0 (one uniform draw decides both, each with probability level / 2)
        salt = (u < 0.5 * self.level).to(x.dtype)
        return torch.where(u < self.level, salt, x)

    def describe(self) -> str:
        """E.g. ``"masking 0.25"``."""
        return f"{self.kind} {self.level:g}"


def corrupting(guide: Callable, corruption: Corruption,
               generator: torch.Generator | None = None) -> Callable:
    """``guide`` run on ``corruption(x)``: the guide q(z | x~) of a denoising objective."""

    def corrupted_guide(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return guide(corruption(x, generator), *args, **kwargs)

    corrupted_guide.__wrapped__ = guide  # type: ignore[attr-defined]
    return corrupted_guide


@dataclass(frozen=True)
class Denoising(WrappedObjective):
    """``base`` trained with the guide seeing ``corruption(x)`` and the model the clean x."""

    corruption: Corruption

    @property
    def name(self) -> str:  # type: ignore[override]  # read-only here; Objective.name a default
        """``"denoising-"`` and the base objective's name, e.g. ``"denoising-elbo"``."""
        return f"denoising-{self.base.name}"

    def describe(self) -> str:
        """E.g. ``"denoising(masking 0.25, elbo)"``."""
        return f"denoising({self.corruption.describe()}, {self.base.describe()})"

    def loss(self, model, guide, x, *, info, data_scale=1.0, train_size=None, step=0,
             kwargs=None, latent_scale: Factor = 1.0, scalars=None):
        """The base's loss with the guide run on ``corruption(x)``."""
        extra = {"scalars": scalars} if scalars is not None else {}
        return self.base.loss(model, corrupting(guide, self.corruption), x, info=info,
                              data_scale=data_scale, train_size=train_size, step=step,
                              kwargs=kwargs, latent_scale=latent_scale, **extra)


def denoising(kind: str = "masking", level: float = 0.25,
              base: Objective | None = None) -> Denoising:
    """The denoising objective: ``base`` (default the ELBO) with the guide's input corrupted.

    Args:
        kind: ``"gaussian"``, ``"masking"`` or ``"salt-and-pepper"`` (:class:`Corruption`).
        level: the Gaussian noise's standard deviation, or the probability that an input is
            corrupted.
        base: the objective to corrupt, e.g. ``ppvae.ELBO(4)`` or ``ppvae.beta_vae(4.0)``.

    Returns:
        An objective for :func:`ppvae.fit`. Evaluate the trained pair on clean data as usual;
        :func:`ppvae.reconstruction_error` with ``corruption=`` measures denoising.
    """
    from .objectives import ELBO

    return Denoising(base or ELBO(), Corruption(kind, level))
