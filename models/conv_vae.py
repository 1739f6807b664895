"""Convolutional VAE for square binary images.

The VAE of Kingma and Welling (2014) with the convolutional networks standard since Radford et
al. (2016) and Gulrajani et al. (2017):

    z_n ~ N(0, I_K),    x_n | z_n ~ Bernoulli(logits = g(z_n)),

g a linear layer to a (2C, side/4, side/4) feature map followed by two stride-2 transposed
convolutions (7 -> 14 -> 28 for MNIST, 2 -> 4 -> 8 for the 8x8 digits). The likelihood is
stated once, as the observed site ``"x"``; x may be ``[N, side*side]`` or ``[N, 1, side, side]``
and the site's event shape follows it. Pair it with :class:`guides.ConvEncoder` (or any
contract-keeping guide of a latent ``"z"`` of size K).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import unique_name

__all__ = ["ConvVAE"]


class ConvVAE(PyroModule):
    """Conv VAE model ``model(x)``: latent ``"z"`` [N, K], observed ``"x"`` (Bernoulli).

    Args:
        side: image side length, divisible by 4.
        latent_dim: K.
        channels: channels of the last hidden feature map (the first has twice as many).
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
    """

    def __init__(self, side: int, latent_dim: int, channels: int = 16, *,
                 name: str | None = None):
        super().__init__(unique_name("conv_vae", name))
        if side % 4:
            raise ValueError(f"ConvVAE needs an image side divisible by 4, got {side}")
        self.side, self.latent_dim, self.channels = side, latent_dim, channels
        self.fc = nn.Linear(latent_dim, 2 * channels * (side // 4) ** 2)
        self.deconv = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1),
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits for latents ``[..., K]``: ``[..., side * side]``."""
        batch = z.shape[:-1]
        q = self.side // 4
        h = self.fc(z.reshape(-1, self.latent_dim)).reshape(-1, 2 * self.channels, q, q)
        return self.deconv(h).reshape(*batch, self.side * self.side)  # [..., side^2]

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample ``"z"`` from N(0, I) and observe x under the convolutional decoder."""
        if x[0].numel() != self.side**2:
            raise ValueError(
                f"ConvVAE expects {self.side}x{self.side} images, got x of shape {tuple(x.shape)}"
            )
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            logits = self.logits(z)  # [..., N, side^2]
            logits = logits.reshape(*logits.shape[:-1], *x.shape[1:])  # [..., N, *image]
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(x.dim() - 1), obs=x)
