"""Figures for any contract-keeping (model, guide) pair, drawn with matplotlib.

Decoding is generic: :func:`decode` traces the model on a batch of zeros with the latent
sites conditioned on given values and reads the *mean* of the observed site's distribution
(pixel probabilities for a Bernoulli likelihood), and :func:`encode` reads the guide's mean of a
latent site. So every figure works for any model keeping the contract, not only ppvae's.

* :func:`sample_grid`: decoded prior draws.
* :func:`reconstructions`: inputs above their reconstructions (guide draw, decoded mean).
* :func:`latent_manifold`: a 2-D latent decoded on a grid spaced by the prior's inverse CDF
  (Kingma and Welling 2014, figure 4).
* :func:`latent_scatter`: encoder means coloured by label.
* :func:`interpolation`: decoded straight line between two datapoints' encodings.
* :func:`latent_traversals`: one dimension varied at a time (Higgins et al. 2017, beta-VAE).
* :func:`collapse_plot`: KL per latent dimension with active units
  (:func:`ppvae.collapse.posterior_collapse`).

Model/guide keyword arguments (labels of a conditional model) go through ``model_kwargs`` and must
have one row per decoded image. Figures that move the latent continuously raise a clear error
for discrete latents (VQ-VAE). Each function returns a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pyro
import torch
from matplotlib.figure import Figure
from pyro import poutine

from ..core.contract import ContractError, check_pair, is_latent, is_observed
from ..core.trace import trace_pair
from .collapse import CollapseReport, base_distribution

__all__ = [
    "collapse_plot",
    "decode",
    "encode",
    "interpolation",
    "latent_manifold",
    "latent_scatter",
    "latent_traversals",
    "reconstructions",
    "sample_grid",
]


def _zero_batch(template: torch.Tensor, m: int) -> torch.Tensor:
    return template.new_zeros(m, *template.shape[1:])  # zeros lie in every image support


def _observed_mean(tr, observed: str, m: int) -> torch.Tensor:
    if observed not in tr.nodes or not is_observed(tr.nodes[observed]):
        names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and is_observed(s)]
        raise ContractError(f"the model has no observed site '{observed}' (observed: {names})")
    return tr.nodes[observed]["fn"].mean.detach().reshape(m, -1)  # [M, D]


@torch.no_grad()
def decode(model, latents: dict[str, torch.Tensor], template: torch.Tensor, *,
           observed: str = "x", model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Mean of the observed site given latent values ``{site: [M, ...]}``: ``[M, D]``.

    Latent sites not given are drawn from the model's (conditional) prior. ``template`` gives
    the shape (and device, dtype) of one datapoint: ``template.shape[1:]``.
    """
    kwargs = dict(model_kwargs or {})
    m = next(iter(latents.values())).shape[0]
    tr = poutine.trace(poutine.condition(model, data=latents)).get_trace(
        _zero_batch(template, m), **kwargs)
    return _observed_mean(tr, observed, m)


@torch.no_grad()
def encode(guide, x: torch.Tensor, *, latent: str = "z",
           model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
    """The guide's mean of ``latent`` for each datapoint (a 64-draw average if it has no mean)."""
    kwargs = dict(model_kwargs or {})
    tr = poutine.trace(guide).get_trace(x, **kwargs)
    if latent not in tr.nodes:
        raise ContractError(f"the guide has no latent site '{latent}'")
    try:
        return tr.nodes[latent]["fn"].mean.detach()  # [N, ...]
    except NotImplementedError:
        with pyro.plate("_ppvae_draws", 64, dim=-2):
            return poutine.trace(guide).get_trace(x, **kwargs).nodes[latent]["value"].mean(0)


def _prior_site(model, template: torch.Tensor, latent: str, m: int = 1, *,
                model_kwargs: Mapping[str, Any] | None = None) -> dict:
    kwargs = dict(model_kwargs or {})
    try:
        with torch.no_grad():
            tr = poutine.trace(model).get_trace(_zero_batch(template, m), **kwargs)
    except NotImplementedError as e:
        raise ContractError(f"the model's prior cannot be sampled (an improper prior?): {e}") from e
    if latent not in tr.nodes or not is_latent(tr.nodes[latent]):
        raise ContractError(f"the model has no latent site '{latent}'")
    return tr.nodes[latent]


def _require_continuous(model, guide, x: torch.Tensor, figure: str, *,
                        model_kwargs: Mapping[str, Any] | None = None) -> None:
    kwargs = dict(model_kwargs or {})
    check_pair(model, guide, x, model_kwargs=kwargs).require_continuous(figure)


def _image_shape(d: int, image_shape) -> tuple[int, int]:
    """The (height, width) each row is drawn as.

    ``image_shape``, a square, or a D x 1 strip (rows of features that are not images).
    """
    if image_shape is not None:
        return tuple(image_shape)
    side = math.isqrt(d)
    if side * side != d:
        return d, 1
    return side, side


def _tile(images: torch.Tensor, nrows: int, ncols: int, shape: tuple[int, int]) -> np.ndarray:
    """``[nrows * ncols, D]`` -> one array with a 1-pixel gap between images."""
    h, w = shape
    imgs = images.detach().cpu().float().reshape(nrows, ncols, h, w)
    canvas = torch.ones(nrows * (h + 1) - 1, ncols * (w + 1) - 1)
    for r in range(nrows):  # a handful of rows of a figure, not datapoints
        for c in range(ncols):
            canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = imgs[r, c]
    return canvas.numpy()


def _show(canvas: np.ndarray, title: str, size: float = 4.0) -> Figure:
    fig, ax = plt.subplots(figsize=(size, size * canvas.shape[0] / canvas.shape[1] + 0.4))
    low, high = min(0.0, float(canvas.min())), max(1.0, float(canvas.max()))  # real values
    ax.imshow(canvas, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    return fig


def sample_grid(model, template: torch.Tensor, num: int = 64, *, observed: str = "x",
                image_shape=None, model_kwargs: Mapping[str, Any] | None = None) -> Figure:
    """Decoded means of ``num`` draws from the model's prior, as a square-ish grid."""
    kwargs = dict(model_kwargs or {})
    with torch.no_grad():
        try:
            tr = poutine.trace(model).get_trace(_zero_batch(template, num), **kwargs)
        except NotImplementedError as e:
            raise ContractError(
                f"the model's prior cannot be sampled (an improper prior?): {e}") from e
    means = _observed_mean(tr, observed, num)  # [num, D]
    ncols = math.ceil(math.sqrt(num))
    nrows = math.ceil(num / ncols)
    pad = means.new_ones(nrows * ncols - num, means.shape[1])
    shape = _image_shape(means.shape[1], image_shape)
    return _show(_tile(torch.cat([means, pad]), nrows, ncols, shape), "samples from the prior")


def reconstructions(model, guide, x: torch.Tensor, *, observed: str = "x", image_shape=None,
                    model_kwargs: Mapping[str, Any] | None = None) -> Figure:
    """Inputs (top row) above their reconstructions: a guide draw decoded to its mean."""
    kwargs = dict(model_kwargs or {})
    with torch.no_grad():
        _, tr = trace_pair(model, guide, x, kwargs)
    n = x.shape[0]
    rec = _observed_mean(tr, observed, n)  # [N, D]
    both = torch.cat([x.reshape(n, -1).to(rec.dtype), rec])  # [2N, D]
    shape = _image_shape(rec.shape[1], image_shape)
    return _show(_tile(both, 2, n, shape), "inputs (top) and reconstructions", size=1.0 * n)


def latent_manifold(model, template: torch.Tensor, *, latent: str = "z", n: int = 15,
                    observed: str = "x", image_shape=None,
                    model_kwargs: Mapping[str, Any] | None = None) -> Figure:
    """Decode a 2-D latent on an n x n grid of prior quantiles (Kingma and Welling, fig. 4).

    Grid coordinates are evenly spaced probabilities in (0, 1) mapped through the prior's
    inverse CDF per dimension; ``kwargs`` must then have ``n * n`` rows.
    """
    kwargs = dict(model_kwargs or {})
    site = _prior_site(model, template, latent, n * n, model_kwargs=kwargs)
    if getattr(site["fn"].support, "is_discrete", False):
        raise ContractError(f"the latent manifold needs a continuous latent; site '{latent}' has "
                            "discrete support (e.g. VQ-VAE codes)")
    if tuple(site["fn"].event_shape) != (2,):
        raise ValueError(f"the latent manifold needs a 2-D latent; site '{latent}' has event "
                         f"shape {tuple(site['fn'].event_shape)}")
    base = base_distribution(site["fn"])
    u = torch.linspace(0.5 / n, 1 - 0.5 / n, n, dtype=template.dtype, device=template.device)
    grid = torch.stack(torch.meshgrid(u, u.flip(0), indexing="xy"), -1).reshape(-1, 2)  # [n*n, 2]
    try:
        z = base.icdf(grid).expand(n * n, 2)  # per-row prior quantiles
    except NotImplementedError as e:
        raise ContractError(f"the latent manifold needs a prior with an inverse CDF per "
                            f"dimension; site '{latent}' has {type(base).__name__}") from e
    means = decode(model, {latent: z}, template, observed=observed, model_kwargs=kwargs)
    shape = _image_shape(means.shape[1], image_shape)
    return _show(_tile(means, n, n, shape), f"latent manifold of '{latent}' (prior quantiles)")


def latent_scatter(guide, x: torch.Tensor, labels: torch.Tensor, *, latent: str = "z",
                   dims: tuple[int, int] = (0, 1),
                   model_kwargs: Mapping[str, Any] | None = None) -> Figure:
    """Encoder means of ``x`` in two latent dimensions, coloured by ``labels``."""
    kwargs = dict(model_kwargs or {})
    z = encode(guide, x, latent=latent, model_kwargs=kwargs).reshape(x.shape[0], -1).cpu()  # [N, K]
    if max(dims) >= z.shape[1]:
        raise ValueError(f"dims {dims} out of range for a {z.shape[1]}-D latent '{latent}'")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    pts = ax.scatter(z[:, dims[0]], z[:, dims[1]], c=labels.cpu(), cmap="tab10", s=6)
    fig.colorbar(pts, ax=ax, label="label")
    ax.set_xlabel(f"{latent}[{dims[0]}]")
    ax.set_ylabel(f"{latent}[{dims[1]}]")
    ax.set_title("encoder means by label")
    fig.tight_layout()
    return fig


def interpolation(model, guide, x: torch.Tensor, *, steps: int = 10, latent: str = "z",
                  observed: str = "x", image_shape=None,
                  model_kwargs: Mapping[str, Any] | None = None) -> Figure:
    """Decode the straight line between the encodings of ``x[0]`` and ``x[1]``.

    Latent sites other than ``latent`` are drawn from the prior. ``model_kwargs`` are per-datapoint
    (rows of ``x``); decoding along the path uses the row of ``x[0]`` (its label, say).
    """
    kwargs = dict(model_kwargs or {})
    two = {k: v[:2] for k, v in kwargs.items()}
    _require_continuous(model, guide, x[:2], "interpolation", model_kwargs=two)
    z = encode(guide, x[:2], latent=latent, model_kwargs=two)  # [2, ...]
    t = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)
    t = t.reshape(steps, *([1] * (z.dim() - 1)))
    path = (1 - t) * z[0] + t * z[1]  # [steps, ...]
    kw = {k: v[:1].expand(steps, *v.shape[1:]) for k, v in kwargs.items()}
    means = decode(model, {latent: path}, x, observed=observed, model_kwargs=kw)
    shape = _image_shape(means.shape[1], image_shape)
    return _show(_tile(means, 1, steps, shape), "interpolation", size=1.0 * steps)


def latent_traversals(model, guide, x: torch.Tensor, *, latent: str = "z", dims=None,
                      span: float = 3.0, steps: int = 9, observed: str = "x",
                      image_shape=None, model_kwargs: Mapping[str, Any] | None = None) -> Figure:
    """One row per latent dimension: the encoding of ``x[0]`` with that dimension swept.

    The dimension runs over ``[-span, span]`` (prior standard deviations for a standard normal
    prior), the others stay fixed. ``model_kwargs`` are per-datapoint (rows of ``x``); the row
    of ``x[0]`` is used throughout.
    """
    kwargs = dict(model_kwargs or {})
    one = {k: v[:1] for k, v in kwargs.items()}
    _require_continuous(model, guide, x[:1], "latent traversals", model_kwargs=one)
    z0 = encode(guide, x[:1], latent=latent, model_kwargs=one)[0]
    if z0.dim() != 1:
        raise ValueError(f"latent traversals need a vector latent; '{latent}' has shape "
                         f"{tuple(z0.shape)}")
    dims = list(range(z0.shape[0])) if dims is None else list(dims)
    values = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)  # [steps]
    z = z0.repeat(len(dims), steps, 1)  # [R, steps, K]
    z[torch.arange(len(dims)), :, torch.tensor(dims)] = values  # row r sweeps dimension dims[r]
    kw = {k: v[:1].expand(len(dims) * steps, *v.shape[1:]) for k, v in kwargs.items()}
    means = decode(model, {latent: z.reshape(-1, z0.shape[0])}, x, observed=observed,
                   model_kwargs=kw)
    shape = _image_shape(means.shape[1], image_shape)
    return _show(_tile(means, len(dims), steps, shape),
                 f"traversals of '{latent}' over [-{span}, {span}]", size=1.0 * steps)


def collapse_plot(report: CollapseReport) -> Figure:
    """Bar chart of KL per latent dimension (± standard error), active units highlighted."""
    k = report.kl.shape[0]
    kl, se = report.kl.cpu().numpy(), report.kl_stderr.cpu().numpy()
    active = report.active.cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * k + 2), 3.5))
    ax.bar(np.arange(k), kl, yerr=se, color=np.where(active, "tab:blue", "tab:gray"))
    ax.set_xlabel(f"dimension of '{report.latent}'")
    ax.set_ylabel("KL(q(z_d | x) || p(z_d)) [nats]")
    ax.set_title(f"{report.num_active}/{k} active units (Var_x E_q[z_d] > {report.threshold:g})")
    fig.tight_layout()
    return fig
