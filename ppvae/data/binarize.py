"""Binarizing grey-level images in [0, 1] for Bernoulli likelihoods.

* static: one Bernoulli draw per pixel with a seeded generator, kept for all epochs (the
  convention of Larochelle and Murray 2011 for MNIST),
* threshold: pixel > 0.5 (deterministic),
* dynamic: a fresh Bernoulli draw each epoch (Burda, Grosse and Salakhutdinov 2016), applied by
  :func:`ppvae.fit` through :func:`dynamic_binarize` when a data set asks for it.
"""

from __future__ import annotations

import torch

__all__ = ["BINARIZATIONS", "binarize", "binarize_splits", "dynamic_binarize"]

BINARIZATIONS = (None, "static", "threshold", "dynamic")


def dynamic_binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A fresh Bernoulli draw of grey levels ``x`` in [0, 1] (same shape, same dtype)."""
    return torch.bernoulli(x, generator=generator)


def binarize(x: torch.Tensor, how: str | None, *, seed: int = 0) -> torch.Tensor:
    """Binarize ``x`` (values in [0, 1]) statically.

    ``"static"`` is a seeded Bernoulli draw, ``"threshold"`` is x > 0.5; ``None`` and
    ``"dynamic"`` return ``x`` unchanged.
    """
    if how not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {how!r}")
    if how == "static":
        g = torch.Generator(device=x.device).manual_seed(seed)
        return torch.bernoulli(x, generator=g)
    if how == "threshold":
        return (x > 0.5).to(x.dtype)
    return x


def binarize_splits(train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor,
                    how: str | None, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Binarize a data set's splits (values in [0, 1]) the way :func:`ppvae.data.load_dataset` does.

    ``"static"`` / ``"threshold"``: every split (static draws seeded ``seed``, ``seed + 1``,
    ``seed + 2``); ``"dynamic"``: training keeps its grey levels (:func:`ppvae.fit` draws a
    fresh binarization each epoch) while validation and test are drawn once, statically, so
    evaluation is fixed; None: unchanged.
    """
    if how not in BINARIZATIONS:
        raise ValueError(f"binarize must be one of {BINARIZATIONS}, got {how!r}")
    if how is None:
        return train, valid, test
    train_how = None if how == "dynamic" else how
    held_how = "static" if how == "dynamic" else how
    return (binarize(train, train_how, seed=seed), binarize(valid, held_how, seed=seed + 1),
            binarize(test, held_how, seed=seed + 2))
