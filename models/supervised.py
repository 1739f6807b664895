"""Supervised (and semi-supervised) VAE: a classifier head on the latent, trained jointly.

    z_n ~ N(0, I_K),    x_n | z_n ~ Bernoulli(logits = g(z_n)),    y_n | z_n ~ Cat(softmax h(z_n)),

with both x and the label y observed in the model, so the ELBO trains the encoder to keep the
class information in z (the joint-classifier VAE of Kingma et al. 2014 section 3.1 without the
M2 label latent; Le, Patterson and White 2018 study this "supervised VAE"). Missing labels are
written as ``-1``: their log-likelihood term is masked out, so partly labelled batches train the
unsupervised part on every datapoint and the classifier on the labelled ones (semi-supervised
use). The likelihoods are stated once, as the observed sites ``"x"`` and ``"y"``; labels are
the keyword ``y`` (integers ``[N]``), and any guide of ``"z"`` (e.g. :class:`guides.MLPEncoder`,
which ignores ``y``) keeps the contract. Per-datapoint log weights and bounds are then of the
joint log p(x, y) (of log p(x) where y is missing).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import mlp, unique_name

__all__ = ["SupervisedVAE"]


class SupervisedVAE(PyroModule):
    """Model ``model(x, y)``: latent ``"z"`` [N, K], observed ``"x"`` [N, D] and ``"y"`` [N].

    Args:
        data_dim: D (flattened).
        num_classes: C.
        latent_dim: K.
        hidden: decoder hidden sizes.
        classifier_hidden: hidden sizes of the classifier head h (none: a linear head).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, data_dim: int, num_classes: int, latent_dim: int,
                 hidden: Sequence[int] = (200,), classifier_hidden: Sequence[int] = (), *,
                 name: str | None = None):
        super().__init__(unique_name("supervised_vae", name))
        self.data_dim, self.num_classes, self.latent_dim = data_dim, num_classes, latent_dim
        self.decoder = mlp([latent_dim, *hidden, data_dim])
        self.classifier = mlp([latent_dim, *classifier_hidden, num_classes])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Sample ``"z"``, observe x and the labels ``y`` (entries -1 masked out) given z."""
        flat = x.reshape(x.shape[0], -1)  # [N, D]
        if flat.shape[1] != self.data_dim:
            raise ValueError(f"SupervisedVAE expects {self.data_dim} features per datapoint, "
                             f"got x of shape {tuple(x.shape)}")
        if y.shape != (x.shape[0],) or y.dtype.is_floating_point:
            raise ValueError(f"labels y must be integers of shape [{x.shape[0]}] (-1 = missing), "
                             f"got {y.dtype} {tuple(y.shape)}")
        if y.numel() and int(y.max()) >= self.num_classes:
            raise ValueError(f"labels must be < {self.num_classes}, got {int(y.max())}")
        y = y.to(flat.device)
        observed = y >= 0  # [N]
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(flat.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=flat)
            labels = dist.Categorical(logits=self.classifier(z)).mask(observed)  # [..., N]
            pyro.sample("y", labels, obs=y.clamp(min=0))

    @torch.no_grad()
    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Most probable class for latents ``[..., K]`` (e.g. the encoder's means): ``[...]``."""
        return self.classifier(z).argmax(-1)

    def class_probs(self, z: torch.Tensor) -> torch.Tensor:
        """p(y | z), ``[..., C]``."""
        return nn.functional.softmax(self.classifier(z), dim=-1)
