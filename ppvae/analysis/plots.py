"""Figures of decoded images for any contract-keeping (model, guide) pair, drawn with matplotlib.

Decoding is generic: :func:`decode` traces the model on a batch of zeros with the latent
sites conditioned on given values and reads the *mean* of the observed site's distribution
(pixel probabilities for a Bernoulli likelihood), and :func:`encode` reads the guide's mean of a
latent site. So every figure works for any model keeping the contract, not only ppvae's.

* :func:`sample_grid`: draws from the model, x ~ p(x | z) with z ~ p(z) (``means=True``: the
  decoded means E[x | z] instead).
* :func:`reconstructions`: inputs above their reconstructions (guide draw, decoded mean).
* :func:`latent_manifold`: a 2-D latent decoded on a grid spaced by the prior's inverse CDF
  (Kingma and Welling 2014, figure 4), the z values on the axes.
* :func:`latent_scatter`: encoder means coloured by label.
* :func:`interpolation`: decoded straight lines between pairs of datapoints' encodings, the
  inputs at both ends and the position t on the line under each column.
* :func:`latent_traversals`: one coordinate varied at a time (Higgins et al. 2017, beta-VAE),
  the coordinate per row and its value per column.
* :func:`collapse_plot`: KL per latent dimension with active units
  (:func:`ppvae.collapse.posterior_collapse`).

Model/guide keyword arguments (labels of a conditional model) go through ``model_kwargs`` and must
have one row per decoded image. Figures that move the latent continuously raise a clear error
for discrete latents (VQ-VAE). Each function returns a ``matplotlib.figure.Figure`` (made
without pyplot), saves it too when given ``path``, and takes ``title=`` to replace its title.
Rows are drawn as ``image_shape`` when given ((H, W), or (C, H, W): three channels in colour,
any other number side by side in grey), else as a square when the number of features is a
square, else as D x 1 strips.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from pyro import poutine

from ..core.contract import ContractError, check_pair, is_latent, is_observed
from ..core.trace import trace_pair
from .collapse import CollapseReport, base_distribution
from .figures import save, wrap

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

PathLike = str | os.PathLike | None
_GAP = "#8fa8c8"  # the colour between tiles (white or black would merge with binary images)


def _zero_batch(template: torch.Tensor, m: int) -> torch.Tensor:
    return template.new_zeros(m, *template.shape[1:])  # zeros lie in every image support


def _observed_site(tr, observed: str) -> dict:
    if observed not in tr.nodes or not is_observed(tr.nodes[observed]):
        names = [n for n, s in tr.nodes.items() if s["type"] == "sample" and is_observed(s)]
        raise ContractError(f"the model has no observed site '{observed}' (observed: {names})")
    return tr.nodes[observed]


def _observed_mean(tr, observed: str, m: int) -> torch.Tensor:
    return _observed_site(tr, observed)["fn"].mean.detach().reshape(m, -1)  # [M, D]


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


def _prior_trace(model, template: torch.Tensor, m: int, kwargs: Mapping[str, Any]):
    try:
        with torch.no_grad():
            return poutine.trace(model).get_trace(_zero_batch(template, m), **kwargs)
    except NotImplementedError as e:
        raise ContractError(f"the model's prior cannot be sampled (an improper prior?): {e}") from e


def _prior_site(model, template: torch.Tensor, latent: str, m: int = 1, *,
                model_kwargs: Mapping[str, Any] | None = None) -> dict:
    tr = _prior_trace(model, template, m, dict(model_kwargs or {}))
    if latent not in tr.nodes or not is_latent(tr.nodes[latent]):
        raise ContractError(f"the model has no latent site '{latent}'")
    return tr.nodes[latent]


def _require_continuous(model, guide, x: torch.Tensor, figure: str, *,
                        model_kwargs: Mapping[str, Any] | None = None) -> None:
    kwargs = dict(model_kwargs or {})
    check_pair(model, guide, x, model_kwargs=kwargs).require_continuous(figure)


def _image_shape(d: int, image_shape) -> tuple[int, int, int]:
    """The (channels, height, width) each row of ``d`` features is drawn as.

    ``image_shape`` ((H, W) or (C, H, W); its product must be ``d``), else a square, else a
    D x 1 strip (rows of features that are not images).
    """
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3) or math.prod(shape) != d or min(shape) < 1:
            raise ValueError(f"image_shape {shape} does not fold rows of {d} features: it "
                             f"needs (H, W) or (C, H, W) with product {d}")
        return (1, *shape) if len(shape) == 2 else shape  # type: ignore[return-value]
    side = math.isqrt(d)
    if side * side != d:
        return 1, d, 1
    return 1, side, side


def _grid(rows: torch.Tensor, nrows: int, ncols: int, image_shape
          ) -> tuple[np.ndarray, tuple[int, int]]:
    """``[nrows * ncols, D]`` rows as one ``[H', W', c]`` canvas and the (h, w) of a tile.

    Tiles are separated by 1-pixel gaps of NaN (drawn grey-blue). Three channels are drawn in
    colour (RGB); any other number of channels side by side in grey.
    """
    c, h, w = _image_shape(rows.shape[1], image_shape)
    imgs = rows.detach().cpu().float().reshape(nrows, ncols, c, h, w)
    if c == 3:
        imgs = imgs.permute(0, 1, 3, 4, 2)  # [R, C', h, w, 3]
    else:
        imgs = imgs.permute(0, 1, 3, 2, 4).reshape(nrows, ncols, h, c * w, 1)
        w, c = c * w, 1
    canvas = torch.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1, c), math.nan)
    for r in range(nrows):  # a handful of rows of a figure, not datapoints
        for col in range(ncols):
            canvas[r * (h + 1): r * (h + 1) + h, col * (w + 1): col * (w + 1) + w] = imgs[r, col]
    return canvas.numpy(), (h, w)


def _centers(n: int, size: int) -> np.ndarray:
    """Pixel centres of ``n`` tiles of ``size`` pixels with 1-pixel gaps."""
    return np.arange(n) * (size + 1) + (size - 1) / 2


def _image_figure(canvas: np.ndarray, shape: tuple[int, int], title: str, *, tile_in: float,
                  xticks: Sequence[str] | None = None, yticks: Sequence[str] | None = None,
                  xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """The tiled canvas with one tick per tile column / row where labels are given."""
    h, w = shape
    ncols = (canvas.shape[1] + 1) // (w + 1)
    nrows = (canvas.shape[0] + 1) // (h + 1)
    margin = 1.2 if yticks else 0.3  # inches left of the images (tick labels, axis label)
    image_w = tile_in * ncols * max(1.0, w / h) ** 0.5
    width = max(3.5, image_w + margin + 0.2)
    image_w = width - margin - 0.2
    text = wrap(title, width, 10)
    below = (0.25 + 0.07 * max(len(t) for t in xticks) if xticks else 0.1) + (0.3 if xlabel
                                                                             else 0.0)
    height = image_w * canvas.shape[0] / canvas.shape[1] + 0.25 * (text.count("\n") + 1) \
        + 0.3 + below + 0.8  # slack for the layout's pads: _fit_height takes back what is left
    fig = Figure(figsize=(width, min(height, 16.0)), layout="constrained")
    ax = fig.subplots()
    ax.set_facecolor(_GAP)  # the gaps between tiles: a colour no grey image has
    if canvas.shape[2] == 3:  # colour: values in [0, 1], the gaps grey-blue
        rgb = np.where(np.isnan(canvas), np.array(to_rgb(_GAP)), canvas)
        ax.imshow(rgb.clip(0.0, 1.0), interpolation="nearest")
    else:
        finite = canvas[np.isfinite(canvas)]
        low = min(0.0, float(finite.min())) if finite.size else 0.0
        high = max(1.0, float(finite.max())) if finite.size else 1.0
        ax.imshow(np.ma.masked_invalid(canvas[..., 0]), cmap="gray", vmin=low, vmax=high,
                  interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks(_centers(ncols, w) if xticks else [],
                  list(xticks) if xticks else [], fontsize=7,
                  rotation=90 if xticks and max(len(t) for t in xticks) > 4 else 0)
    ax.set_yticks(_centers(nrows, h) if yticks else [], list(yticks) if yticks else [],
                  fontsize=7)
    ax.tick_params(length=0)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    fig.suptitle(text, fontsize=10)
    _fit_height(fig, ax)
    return fig


def _fit_height(fig: Figure, ax) -> None:
    """Shrink the figure to the height its image takes.

    An equal-aspect image leaves the spare height of its slot as blank bands above and below
    it; the layout is computed again when the figure is drawn.
    """
    fig.draw_without_rendering()
    spare = (ax.get_position(original=True).height - ax.get_position().height) \
        * fig.get_figheight()
    if spare > 0.05:
        fig.set_figheight(fig.get_figheight() - spare)


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


def sample_grid(model, template: torch.Tensor, num: int = 64, *, means: bool = False,
                observed: str = "x", image_shape=None, ncols: int | None = None,
                row_labels: Sequence[str] | None = None,
                model_kwargs: Mapping[str, Any] | None = None, title: str | None = None,
                path: PathLike = None) -> Figure:
    """``num`` draws from the model as a grid: x ~ p(x | z) with z ~ p(z), ancestrally.

    Args:
        model: a model keeping the contract; it is run on ``num`` rows of zeros shaped like
            ``template`` (rows ``[1:]`` of its shape, its device and dtype).
        template: data whose row shape, device and dtype the draws take.
        num: the number of draws.
        means: show the decoded means E[x | z] (pixel probabilities for a Bernoulli
            likelihood) instead of draws of x.
        observed: the observed site.
        image_shape: (H, W) or (C, H, W) of one image (module docstring).
        ncols: images per row (default about sqrt(num)).
        row_labels: a label per row of the grid (e.g. the class of a conditional model).
        model_kwargs: the model's keyword arguments, one row per draw (labels).
        title: replaces the default title.
        path: also save the figure there.
    """
    kwargs = dict(model_kwargs or {})
    tr = _prior_trace(model, template, num, kwargs)
    fn = _observed_site(tr, observed)["fn"]
    with torch.no_grad():
        if means:
            images = fn.mean.detach().reshape(num, -1)
        else:
            try:
                images = fn.sample().detach().reshape(num, -1)  # [num, D]
            except NotImplementedError as e:
                raise ContractError(f"the likelihood of '{observed}' ({type(fn).__name__}) "
                                    "cannot be sampled; draw the decoded means instead "
                                    "(means=True; --means in the CLI)") from e
    ncols = ncols or math.ceil(math.sqrt(num))
    nrows = math.ceil(num / ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels has {len(row_labels)} labels for {nrows} rows of "
                         f"{ncols} images")
    pad = images.new_full((nrows * ncols - num, images.shape[1]), math.nan)
    text = title or (f"Decoded means E[x | z] of {num} prior draws z ~ p(z)" if means else
                     f"{num} samples from the model: z ~ p(z), then x ~ p(x | z)")
    canvas, shape = _grid(torch.cat([images, pad]), nrows, ncols, image_shape)
    return save(_image_figure(canvas, shape, text, tile_in=0.55, yticks=row_labels), path)


def reconstructions(model, guide, x: torch.Tensor, *, observed: str = "x", image_shape=None,
                    labels: Sequence | None = None, datapoint_label: str = "datapoint",
                    model_kwargs: Mapping[str, Any] | None = None, title: str | None = None,
                    path: PathLike = None) -> Figure:
    """Inputs (top row) above their reconstructions: one guide draw each, decoded to its mean.

    ``labels`` names the datapoints (e.g. their rows in the split) under the columns;
    ``datapoint_label`` says what they are.
    """
    kwargs = dict(model_kwargs or {})
    with torch.no_grad():
        _, tr = trace_pair(model, guide, x, kwargs)
    n = x.shape[0]
    rec = _observed_mean(tr, observed, n)  # [N, D]
    both = torch.cat([x.reshape(n, -1).to(rec.dtype), rec])  # [2N, D]
    canvas, shape = _grid(both, 2, n, image_shape)
    ticks = [str(v) for v in labels] if labels is not None else [str(i) for i in range(n)]
    text = title or (f"{n} inputs x (top) and reconstructions (bottom): E[x | z] of one draw "
                     "z ~ q(z | x) each")
    return save(_image_figure(canvas, shape, text, tile_in=0.6,
                              xticks=ticks, yticks=["input", "reconstruction"],
                              xlabel=datapoint_label), path)


def latent_manifold(model, template: torch.Tensor, *, latent: str = "z", n: int = 15,
                    observed: str = "x", image_shape=None,
                    model_kwargs: Mapping[str, Any] | None = None, title: str | None = None,
                    path: PathLike = None) -> Figure:
    """Decode a 2-D latent on an n x n grid of prior quantiles (Kingma and Welling, fig. 4).

    Grid coordinates are evenly spaced probabilities in (0, 1) mapped through the prior's
    inverse CDF per dimension; ``model_kwargs`` must then have ``n * n`` rows. The axes show
    the z values of the columns (``latent[0]``, left to right) and rows (``latent[1]``,
    bottom to top), read from the first row and column (a prior that depends on the model's
    keyword arguments may move them from row to row).
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
    canvas, shape = _grid(means, n, n, image_shape)
    zz = z.reshape(n, n, 2).cpu()
    cols = [_fmt(float(v)) for v in zz[0, :, 0]]
    rows = [_fmt(float(v)) for v in zz[:, 0, 1]]
    text = title or (f"Latent manifold of '{latent}': decoded means E[x | z] on a {n} x {n} "
                     f"grid of prior quantiles ({u[0]:.2g} to {u[-1]:.2g} per coordinate)")
    return save(_image_figure(canvas, shape, text, tile_in=0.45,
                              xticks=cols, yticks=rows, xlabel=f"{latent}[0]",
                              ylabel=f"{latent}[1]"), path)


def latent_scatter(guide, x: torch.Tensor, labels: torch.Tensor, *, latent: str = "z",
                   dims: tuple[int, int] = (0, 1),
                   model_kwargs: Mapping[str, Any] | None = None, title: str | None = None,
                   path: PathLike = None) -> Figure:
    """Encoder means of ``x`` in two latent dimensions, coloured by ``labels``."""
    kwargs = dict(model_kwargs or {})
    z = encode(guide, x, latent=latent, model_kwargs=kwargs).reshape(x.shape[0], -1).cpu()  # [N, K]
    if max(dims) >= z.shape[1]:
        raise ValueError(f"dims {dims} out of range for a {z.shape[1]}-D latent '{latent}'")
    fig = Figure(figsize=(5.5, 4.8), layout="constrained")
    ax = fig.subplots()
    pts = ax.scatter(z[:, dims[0]], z[:, dims[1]], c=labels.cpu(), cmap="tab10", s=6)
    fig.colorbar(pts, ax=ax, label="label")
    ax.set_xlabel(f"E_q[{latent}[{dims[0]}] | x]")
    ax.set_ylabel(f"E_q[{latent}[{dims[1]}] | x]")
    ax.set_title(title or f"Encoder means of {x.shape[0]} datapoints, coloured by label",
                 fontsize=10)
    return save(fig, path)


def interpolation(model, guide, x: torch.Tensor, *, steps: int = 10, num_pairs: int = 1,
                  latent: str = "z", observed: str = "x", image_shape=None,
                  show_inputs: bool = True, labels: Sequence | None = None,
                  datapoint_label: str = "datapoint",
                  model_kwargs: Mapping[str, Any] | None = None, title: str | None = None,
                  path: PathLike = None) -> Figure:
    """Decode straight lines between encodings: row r joins ``x[2r]`` to ``x[2r + 1]``.

    Column t shows E[x | z(t)] for z(t) = (1 − t) E_q[z | x_a] + t E_q[z | x_b], t in [0, 1]
    (``steps`` values); with ``show_inputs`` the inputs x_a and x_b flank each row. Latent
    sites other than ``latent`` are drawn from the prior. ``model_kwargs`` are per-datapoint
    (rows of ``x``); decoding along a line uses the row of its x_a (its label, say).
    ``labels`` names the rows of ``x`` on the figure (default their positions).
    """
    kwargs = dict(model_kwargs or {})
    m = 2 * num_pairs
    if num_pairs < 1 or x.shape[0] < m:
        raise ValueError(f"interpolation with num_pairs={num_pairs} needs at least {m} rows of "
                         f"x (pairs x[0]-x[1], x[2]-x[3], ...); x has {x.shape[0]}")
    ends = {k: v[:m] for k, v in kwargs.items()}
    _require_continuous(model, guide, x[:m], "interpolation", model_kwargs=ends)
    z = encode(guide, x[:m], latent=latent, model_kwargs=ends)  # [2P, ...]
    t = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)
    t = t.reshape(1, steps, *([1] * (z.dim() - 1)))
    path_z = (1 - t) * z[0::2].unsqueeze(1) + t * z[1::2].unsqueeze(1)  # [P, steps, ...]
    kw = {k: v[:m:2].repeat_interleave(steps, 0) for k, v in kwargs.items()}
    means = decode(model, {latent: path_z.reshape(num_pairs * steps, *z.shape[1:])}, x,
                   observed=observed, model_kwargs=kw).reshape(num_pairs, steps, -1)
    if show_inputs:
        inputs = x[:m].reshape(num_pairs, 2, -1).to(means.dtype)
        means = torch.cat([inputs[:, :1], means, inputs[:, 1:]], 1)
    cols = means.shape[1]
    canvas, shape = _grid(means.reshape(-1, means.shape[2]), num_pairs, cols, image_shape)
    names = [str(v) for v in labels] if labels is not None else [str(i) for i in range(m)]
    ticks = [f"{float(v):.2f}".rstrip("0").rstrip(".") for v in t.reshape(-1)]
    ticks = ["x_a", *ticks, "x_b"] if show_inputs else ticks
    text = title or (f"Interpolation: E[x | z(t)] along z(t) = (1 − t) E_q[{latent} | x_a] + "
                     f"t E_q[{latent} | x_b]" + (", inputs at the ends" if show_inputs else ""))
    return save(_image_figure(canvas, shape, text, tile_in=0.55, xticks=ticks,
                              yticks=[f"{names[2 * r]} → {names[2 * r + 1]}"
                                      for r in range(num_pairs)],
                              xlabel="t", ylabel=f"{datapoint_label}s a → b"), path)


def latent_traversals(model, guide, x: torch.Tensor, *, latent: str = "z", dims=None,
                      span: float = 3.0, steps: int = 9, observed: str = "x",
                      image_shape=None, label=None, datapoint_label: str = "datapoint",
                      model_kwargs: Mapping[str, Any] | None = None, title: str | None = None,
                      row_labels: Sequence[str] | None = None, path: PathLike = None) -> Figure:
    """One row per latent coordinate: the encoding of ``x[0]`` with that coordinate swept.

    ``row_labels`` names the rows (default ``z[d]``), e.g. the generative factor each swept
    coordinate is most informative of (:attr:`ppvae.DisentanglementReport.best_latent`).

    The coordinate runs over ``[-span, span]`` (prior standard deviations for a standard
    normal prior) in ``steps`` values, shown under the columns; the others stay at
    E_q[z | x[0]]. ``model_kwargs`` are per-datapoint (rows of ``x``); the row of ``x[0]`` is
    used throughout. ``label`` names ``x[0]`` in the title (default "datapoint 0").
    """
    kwargs = dict(model_kwargs or {})
    one = {k: v[:1] for k, v in kwargs.items()}
    _require_continuous(model, guide, x[:1], "latent traversals", model_kwargs=one)
    z0 = encode(guide, x[:1], latent=latent, model_kwargs=one)[0]
    if z0.dim() != 1:
        raise ValueError(f"latent traversals need a vector latent; '{latent}' has shape "
                         f"{tuple(z0.shape)}")
    k = z0.shape[0]
    dims = list(range(k)) if dims is None else [int(d) for d in dims]
    if not dims or not all(0 <= d < k for d in dims):
        raise ValueError(f"dims {dims} out of range for the {k}-D latent '{latent}'")
    values = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)  # [steps]
    z = z0.repeat(len(dims), steps, 1)  # [R, steps, K]
    z[torch.arange(len(dims)), :, torch.tensor(dims)] = values  # row r sweeps dimension dims[r]
    kw = {k_: v[:1].expand(len(dims) * steps, *v.shape[1:]) for k_, v in kwargs.items()}
    means = decode(model, {latent: z.reshape(-1, k)}, x, observed=observed, model_kwargs=kw)
    canvas, shape = _grid(means, len(dims), steps, image_shape)
    who = f"{datapoint_label} {0 if label is None else label}"
    shown = "all" if len(dims) == k else f"{len(dims)} of {k}"
    if row_labels is not None and len(row_labels) != len(dims):
        raise ValueError(f"row_labels has {len(row_labels)} labels for {len(dims)} rows")
    text = title or (f"Latent traversals: E[x | z] with one coordinate of '{latent}' set to "
                     f"each value in [-{span:g}, {span:g}], the others at E_q[{latent} | x] of "
                     f"{who} ({shown} coordinates)")
    return save(_image_figure(canvas, shape, text, tile_in=0.55,
                              xticks=[_fmt(float(v)) for v in values],
                              yticks=list(row_labels) if row_labels is not None else
                              [f"{latent}[{d}]" for d in dims],
                              xlabel="value of the varied coordinate",
                              ylabel="varied coordinate"), path)


def collapse_plot(report: CollapseReport, *, title: str | None = None,
                  path: PathLike = None) -> Figure:
    """Bar chart of KL per latent dimension (± standard error), active units highlighted."""
    k = report.kl.shape[0]
    kl, se = report.kl.cpu().numpy(), report.kl_stderr.cpu().numpy()
    active = report.active.cpu().numpy()
    fig = Figure(figsize=(max(4.5, 0.4 * k + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(k), kl, yerr=se, color=np.where(active, "tab:blue", "tab:gray"))
    ax.set_xlabel(f"dimension of '{report.latent}'")
    ax.set_ylabel("KL(q(z_d | x) || p(z_d)) (nats)")
    ax.set_title(title or f"{report.num_active}/{k} active units (Var_x E_q[z_d] > "
                 f"{report.threshold:g})", fontsize=10)
    return save(fig, path)
