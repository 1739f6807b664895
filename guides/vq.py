"""The VQ-VAE encoder (van den Oord, Vinyals and Kavukcuoglu 2017) as a Pyro guide.

An MLP maps x to encodings z_e [N, P, C]; each position snaps to its nearest codebook row
(the model's codebook, shared, not owned). The guide samples ``"z"`` from a point mass at the
straight-through value sg(e) + z_e - sg(z_e) (exactly the code e, with the gradient of z_e), and
adds the training losses

    codebook ||sg(z_e) - e||^2 (gradient updates only)  +  beta ||z_e - sg(e)||^2 (commitment)

as ``pyro.factor("vq_loss", +loss)``: a guide factor raises log q, so Pyro's ELBO objective
subtracts it, while ppvae's per-datapoint log weights count only latent sites and ignore it.
With an EMA model the codebook moves by :meth:`models.VQVAE.ema_update` at the start of each
guide call while the model is in ``train()`` mode with gradients enabled (before quantizing, so
model and guide see one codebook per step); call ``model.eval()`` or evaluate under
``torch.no_grad()`` to keep it fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ..nn import mlp, unique_name

__all__ = ["VQEncoder"]


class VQEncoder(PyroModule):
    """Nearest-code encoder for a :class:`models.VQVAE` ``model``.

    Args:
        model: the VQ-VAE whose codebook the guide quantizes to (a reference, not a submodule).
        hidden: encoder hidden sizes.
        beta: commitment-loss weight (0.25 in the paper).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, model, hidden: Sequence[int] = (200,), *, beta: float = 0.25,
                 name: str | None = None):
        super().__init__(unique_name("vq_encoder", name))
        object.__setattr__(self, "_model", model)  # the model owns the codebook
        self.data_dim, self.beta = model.data_dim, beta
        self.shape = (model.num_positions, model.code_dim)
        self.net = mlp([model.data_dim, *hidden, model.num_positions * model.code_dim])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous encodings z_e, ``[N, P, C]``."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.data_dim:
            raise ValueError(f"VQEncoder expects {self.data_dim} features per datapoint, got x "
                             f"of shape {tuple(x.shape)}")
        return self.net(flat).reshape(x.shape[0], *self.shape)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z"`` at the nearest codes (straight-through) and add the VQ losses."""
        model = self._model
        z_e = self.encode(x)  # [N, P, C]
        if model.ema and model.training and torch.is_grad_enabled():
            # move the codebook first, so model and guide see the same codebook in this step
            model.ema_update(z_e.detach(), model.quantize(z_e.detach())[0])
        e = model.quantize(z_e)[1]  # [N, P, C] nearest codes
        z_st = e.detach() + (z_e - z_e.detach())  # straight-through: exactly e, gradient of z_e
        loss = self.beta * (z_e - e.detach()).pow(2).sum((-2, -1))  # [N]
        if not model.ema:
            loss = loss + (z_e.detach() - e).pow(2).sum((-2, -1))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Delta(z_st, event_dim=2))
            pyro.factor("vq_loss", loss, has_rsample=True)
