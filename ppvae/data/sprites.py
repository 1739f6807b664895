"""Sprites: small binary images with known generative factors, rendered offline with numpy.

A data set in the spirit of dSprites (Matthey et al. 2017), small enough to generate in well
under a second: each image shows one shape, drawn from five independent factors, each a grid of
values indexed ``0 .. n - 1``:

* ``shape``, 3 values: square, ellipse (axes 1 : 0.5), heart;
* ``scale``, 5 values: 0.6, 0.7, 0.8, 0.9, 1 times the largest radius (a quarter of the image
  side);
* ``rotation``, 8 values: k pi / 16 for k = 0 .. 7, eight angles in [0, pi / 2)
  (counterclockwise);
* ``x``, 8 values: the horizontal centre, 0.28125 .. 0.71875 of the width in steps of 1/16;
* ``y``, 8 values: the vertical centre (from the top), the same grid.

Rotation covers [0, pi / 2) only, not dSprites' [0, 2 pi): the square looks the same after a
quarter turn and the ellipse after a half turn, so over a full turn the rotation of those
shapes is not identifiable from the image. Within a quarter turn every angle gives a different
image for every shape, scale and position at 28x28, 32x32 and 64x64 (the tests check all 7680
combinations); the smallest scale is 0.6 rather than 0.5 because at 0.5 the smallest square
turned by +-11.25 degrees rasterizes to the same pixels. Neighbouring angles of a small
sprite still differ by a few pixels only.

Every shape lies inside a disc of radius ``scale * side / 4`` about its centre, whatever the
rotation, and the centre grid keeps that disc 1/32 of the side away from each border, so no
shape touches the image border at any size (one pixel at 32x32, two at 64x64).

Rendering tests each pixel centre against the shape in the shape's own frame: the image point
is translated to the shape's centre, rotated back by the angle and divided by the radius, then
tested against the unit square ``|u|, |v| <= 1 / sqrt 2``, the ellipse ``u^2 + (v / 0.5)^2 <= 1``
or the heart's implicit curve ``(X^2 + Y^2 - 1)^3 - X^2 Y^3 <= 0`` (with ``X = 1.25 u``,
``Y = 1.25 v + 0.25``, which puts the heart inside the unit disc). Images are binary.

:func:`sprites` draws each factor independently and uniformly from its grid with a seed;
:func:`render` draws given factor indices. The FactorVAE score
(:func:`ppvae.analysis.disentangle.factor_vae_score`) needs batches sharing a factor value; it
selects them among the rows of a data set, so no renderer is called there.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["FACTOR_NAMES", "FACTOR_VALUES", "SHAPES", "Sprites", "render", "sprites"]

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
_MAX_RADIUS = 0.25  # the largest shape's enclosing radius, a fraction of the image side
_CENTRES = 0.28125 + 0.0625 * np.arange(8)  # keeps the disc 1/32 of the side from the border
FACTOR_VALUES: tuple[np.ndarray, ...] = (
    np.arange(3, dtype=np.float64),  # shape index into SHAPES
    np.linspace(0.6, 1.0, 5),  # scale, relative to the largest radius
    np.arange(8) * (np.pi / 16),  # rotation (radians, counterclockwise)
    _CENTRES,  # x centre, a fraction of the width
    _CENTRES.copy(),  # y centre, a fraction of the height from the top
)
_CHUNK = 2048  # images rendered per numpy pass (bounds the temporaries at 64x64)


class Sprites(NamedTuple):
    """Sprite images and the factor indices that generated them.

    ``factor_values[k][factors[n, k]]`` is the value of factor ``k`` in image ``n`` (see the
    module docstring for the units).
    """

    images: torch.Tensor  # [N, size, size] float32, 0 or 1
    factors: torch.Tensor  # [N, 5] int64 indices into factor_values
    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_values: tuple[np.ndarray, ...] = FACTOR_VALUES
    shapes: tuple[str, ...] = SHAPES

    @property
    def num_values(self) -> tuple[int, ...]:
        """The number of values of each factor: (3, 5, 8, 8, 8)."""
        return tuple(len(v) for v in self.factor_values)

    def __repr__(self) -> str:
        """The number and size of the images and the factors with their number of values."""
        n, h, w = self.images.shape
        facts = ", ".join(f"{k} {v}" for k, v in zip(self.factor_names, self.num_values,
                                                        strict=True))
        return f"Sprites({n} images {h}x{w}; factors {facts})"

    def to_dataframe(self):
        """One row per image (pandas; index ``datapoint``): the index of each factor."""
        from ..core.records import frame

        return frame({k: self.factors[:, j] for j, k in enumerate(self.factor_names)})


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is the point (u, v) of the shape's unit frame (v up) inside shape ``shape``?"""
    if shape == 0:  # square with its corners on the unit circle
        half = np.float32(1 / np.sqrt(2))
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == 1:  # ellipse, semi-axes 1 and 0.5
        return u * u + 4 * v * v <= 1
    X, Y = 1.25 * u, 1.25 * v + 0.25  # the heart curve, centred on its enclosing circle
    r2 = X * X + Y * Y - 1
    return r2 * r2 * r2 - X * X * Y * Y * Y <= 0


def _render_chunk(f: np.ndarray, size: int) -> np.ndarray:
    centres = ((np.arange(size) + 0.5) / size).astype(np.float32)  # [S] pixel centres
    radius = (FACTOR_VALUES[1][f[:, 1]] * _MAX_RADIUS).astype(np.float32)[:, None, None]
    angle = FACTOR_VALUES[2][f[:, 2]]
    cos = np.cos(angle).astype(np.float32)[:, None, None]
    sin = np.sin(angle).astype(np.float32)[:, None, None]
    px = centres[None, None, :] - FACTOR_VALUES[3][f[:, 3]].astype(np.float32)[:, None, None]
    py = FACTOR_VALUES[4][f[:, 4]].astype(np.float32)[:, None, None] - centres[None, :, None]
    u = (cos * px + sin * py) / radius  # [n, S, S] rotated back by the angle, in radii
    v = (cos * py - sin * px) / radius
    out = np.zeros((len(f), size, size), dtype=bool)
    for k in range(len(SHAPES)):
        rows = f[:, 0] == k
        if rows.any():
            out[rows] = _inside(k, u[rows], v[rows])
    return out


def render(factors, size: int = 32) -> np.ndarray:
    """Draw sprites from factor indices.

    Args:
        factors: ``[N, 5]`` integer indices into :data:`FACTOR_VALUES` (shape, scale, rotation,
            x, y).
        size: the image side in pixels (28, 32, 64, or any size >= 16).

    Returns:
        ``[N, size, size]`` bool images (True: the shape covers the pixel centre).
    """
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != len(FACTOR_NAMES) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors must be integer indices of shape [N, {len(FACTOR_NAMES)}] "
                         f"({', '.join(FACTOR_NAMES)}), got {f.dtype} {f.shape}")
    sizes = np.array([len(v) for v in FACTOR_VALUES])
    bad = (f < 0) | (f >= sizes)
    if bad.any():
        k = int(np.nonzero(bad.any(0))[0][0])
        raise ValueError(f"factor '{FACTOR_NAMES[k]}' takes indices 0..{sizes[k] - 1}, got "
                         f"{int(f[bad[:, k], k][0])}")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size}")
    parts = [_render_chunk(f[i:i + _CHUNK], int(size)) for i in range(0, len(f), _CHUNK)]
    return np.concatenate(parts) if parts else np.zeros((0, size, size), dtype=bool)


def sprites(num: int = 6000, size: int = 32, *, seed: int = 0) -> Sprites:
    """Draw ``num`` sprites, each factor independent and uniform over its grid.

    Args:
        num: the number of images.
        size: the image side in pixels.
        seed: seeds the factors (numpy's ``default_rng``); the same seed gives the same images.

    Returns:
        A :class:`Sprites` record of CPU tensors.
    """
    if int(num) != num or num < 1:
        raise ValueError(f"num must be a positive integer, got {num}")
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, len(v), size=int(num)) for v in FACTOR_VALUES], axis=1)
    images = render(factors, size)
    return Sprites(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(factors))
