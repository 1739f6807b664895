"""Convolutional diagonal-Gaussian encoder for square images (28x28 MNIST, 8x8 digits).

Strided 4x4 convolutions halve the image twice (28 -> 14 -> 7, 8 -> 4 -> 2), a linear layer maps
the feature map to the mean and softplus scale of q(z | x) = N(mu(x), diag sigma(x)^2): the
convolutional inference network used for image VAEs since Kingma and Welling (2014) and Gulrajani
et al. (2017). It mirrors the transposed-convolution decoder of :class:`models.ConvVAE`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..nn import unique_name

__all__ = ["ConvEncoder", "conv_trunk"]


def conv_trunk(channels: int) -> nn.Sequential:
    """Two stride-2 4x4 convolutions, 1 -> channels -> 2 * channels, halving H and W each."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.ReLU(),
    )


def as_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """Reshape ``[N, side*side]`` or ``[N, 1, side, side]`` or ``[N, side, side]`` to NCHW."""
    if x[0].numel() != side * side:
        raise ValueError(
            f"expected images of {side}x{side} = {side * side} pixels per datapoint, got x of "
            f"shape {tuple(x.shape)}"
        )
    return x.reshape(x.shape[0], 1, side, side)


class ConvEncoder(PyroModule):
    """Diagonal-Gaussian convolutional encoder: images [N, side*side] -> N(mu, sigma^2) [N, K].

    Args:
        side: image side length (divisible by 4: 8 for digits, 28 for MNIST).
        latent_dim: K.
        channels: channels of the first convolution (the second has twice as many).
        latent: the latent site name the model uses.
        name: Pyro parameter-store prefix (default: a fresh one, see ppvae.naming).
        min_scale: floor added to the softplus scale.
    """

    def __init__(self, side: int, latent_dim: int, channels: int = 16, *, latent: str = "z",
                 name: str | None = None, min_scale: float = 1e-4):
        super().__init__(unique_name("conv_encoder", name))
        if side % 4:
            raise ValueError(f"ConvEncoder needs an image side divisible by 4, got {side}")
        self.side, self.latent_dim, self.latent = side, latent_dim, latent
        self.min_scale = min_scale
        self.trunk = conv_trunk(channels)
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, 2 * latent_dim)

    def distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x_n) with batch shape [N] and event shape [K]."""
        h = self.trunk(as_images(x, self.side)).flatten(1)  # [N, 2C * side^2 / 16]
        loc, raw = self.head(h).chunk(2, dim=-1)  # [N, K] each
        return dist.Normal(loc, nn.functional.softplus(raw) + self.min_scale).to_event(1)

    def forward(self, x: torch.Tensor, **kwargs) -> None:
        """Sample the latent from q(z | x) inside the ``"data"`` plate."""
        q = self.distribution(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample(self.latent, q)
