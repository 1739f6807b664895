"""``ppvae sample``: draws from the prior of a trained run and pictures of its latent space.

:func:`sample_run` writes the report's samples section with its figures:

* ``samples.png``: samples from the model, z ~ p(z) then x ~ p(x | z) (``--means``: the decoded
  means E[x | z] instead); a model that takes labels (the zoo's ``takes_labels``) gets one row
  per label;
* ``manifold.png`` (a 2-D continuous latent): decoded means over a grid of prior quantiles, the
  z values on the axes;
* ``traversals.png``: each latent coordinate varied in turn around the encoding of a test row
  (at most 12 coordinates: the most active ones, by the variance of the encoder means over test
  rows, when there are more);
* ``interpolation.png``: decoded straight lines between the encodings of three pairs of test
  rows, the inputs at both ends.

A figure that does not apply to the pair (a discrete or point-mass latent, a latent that is not
2-D for the manifold, an improper prior) is left out and the section says why. ``ppvae train``
writes the same section for image data when it finishes. Rows are drawn as the run's image shape,
``--image-shape`` (H W or C H W) when given, else as squares when the feature count is a square,
else as D x 1 strips.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import pyro
import torch

from .inputs import nonnegative_int, positive_int
from .runs import provenance, record_warnings
from .trained import Rows, Trained, locked_run
from .zoo import MODELS

__all__ = ["add_arguments", "check_image_shape", "main", "model_device", "sample_run"]

_MAX_TRAVERSED = 12  # latent coordinates in traversals.png at most
_PAIRS = 3  # interpolation rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae sample``."""
    p.add_argument("run", help="run directory")
    p.add_argument("--num", type=positive_int, default=64, help="images (a conditional model shows "
                   "one row per label)")
    p.add_argument("--means", action="store_true",
                   help="draw the decoded means E[x | z] of the prior draws instead of samples "
                   "x ~ p(x | z)")
    p.add_argument("--image-shape", dest="image_shape", type=positive_int, nargs="+",
                   metavar="N", help="draw each row as an H W (or C H W) image (default: the "
                   "run's image shape, else a square, else a D x 1 strip)")
    p.add_argument("--seed", type=nonnegative_int,
                   help="seed of the draws (default: the run's seed)")


def main(args) -> int:
    """Run ``ppvae sample``; returns the exit code."""
    with locked_run(args.run) as tr:
        files = sample_run(tr, num=args.num, seed=args.seed, means=args.means,
                           image_shape=args.image_shape)
    print("wrote " + ", ".join(str(tr.run.file(f)) for f in files))
    return 0


def check_image_shape(shape: Sequence[int] | None, data_dim: int, flag: str = "--image-shape"
                      ) -> tuple[int, ...] | None:
    """``shape`` as a tuple when it folds rows of ``data_dim`` features, else a ValueError.

    The message names ``flag``, the command line's option for it.
    """
    if shape is None:
        return None
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or math.prod(shape) != data_dim:
        raise ValueError(f"{flag} {' '.join(map(str, shape))} does not fold this run's rows of "
                         f"{data_dim} features: give H W (or C H W) whose product is {data_dim}")
    return shape


def model_device(model) -> torch.device:
    """Where a model's parameters live (the CPU for a model that is not a module)."""
    p = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    return p.device if p is not None else torch.device("cpu")


def sample_run(tr: Trained, *, num: int = 64, seed: int | None = None, means: bool = False,
               image_shape: Sequence[int] | None = None, require_samples: bool = True
               ) -> list[str]:
    """The samples section: prior samples and latent-space figures (module docstring).

    Args:
        tr: the trained run (:func:`ppvae.app.trained.open_run`).
        num: images in ``samples.png`` (a conditional model: one row per label instead).
        seed: seeds the draws and the test rows shown (None: the run's seed).
        means: draw the decoded means E[x | z] instead of samples of x.
        image_shape: (H, W) or (C, H, W) to draw rows as (default: the data's).
        require_samples: raise when the prior cannot be sampled (else the section says so).

    Returns:
        The names of the figures written.
    """
    seed = tr.config.get("seed", 0) if seed is None else seed
    shape = check_image_shape(image_shape, int(tr.data.test.shape[1])) or tr.data.image_shape
    pyro.set_rng_seed(seed)
    dev = model_device(tr.model)
    rows = Rows.select(tr.data, "test", 2 * _PAIRS, seed)
    x = rows.take(tr.data).to(dev)
    kw = {k: v.to(dev) for k, v in rows.kw(tr.config, tr.data).items()}
    files: list[str] = []
    lines: list[str] = []
    skipped: dict[str, str] = {}
    data: dict = {}
    with record_warnings() as found:
        try:
            lines.append(_samples(tr, x[:1], num, means, shape, data))
            files.append("samples.png")
        except (ValueError, NotImplementedError) as e:  # ContractError is a ValueError
            if require_samples:
                raise
            skipped["samples.png"] = str(e)
        done, notes = _latent_figures(tr, x, kw, rows, shape, skipped)
    files += done
    lines += notes
    md = "Figures of the model's prior and latent space (decoded by the trained decoder):\n\n" \
        + "".join(f"- {line}\n" for line in lines)
    if skipped:
        md += "\nNot drawn: " + "; ".join(f"`{f}`: {why}" for f, why in skipped.items()) + "."
    if shape is None and tr.data.image_shape is None:
        md += ("\n\nThe rows are not images: drawn as D x 1 strips or squares; `ppvae sample "
               "--image-shape H W` draws them as H x W images.")
    tr.run.set_section("samples", "Samples and latent space", md.rstrip(), {
        **data, "figures": files, "not_drawn": skipped,
        "image_shape": None if shape is None else list(shape)},
        provenance=provenance(tr.run, seed=seed, rows={"latent_figures": rows.record()}),
        warnings=found, files=files)
    return files


def _samples(tr: Trained, template: torch.Tensor, num: int, means: bool, shape,
             data: dict) -> str:
    """Write samples.png; fill ``data`` with what it shows; return its line for the report."""
    from ..analysis.plots import sample_grid

    if MODELS[tr.config["model"]].takes_labels:
        assert tr.data.train_labels is not None  # build_model refuses it without labels
        c = int(tr.data.train_labels.max()) + 1
        y = torch.arange(c, device=template.device).repeat_interleave(c)  # a c x c grid
        title = (f"Decoded means E[x | z, y] of {c} draws z ~ p(z | y) per label y" if means
                 else f"{c} samples per label y: z ~ p(z | y), then x ~ p(x | z, y)")
        fig = sample_grid(tr.model, template, c * c, means=means, image_shape=shape, ncols=c,
                          row_labels=[f"y = {k}" for k in range(c)], model_kwargs={"y": y},
                          title=title)
        what = f"{c} draws for each of {c} labels"
    else:
        fig = sample_grid(tr.model, template, num, means=means, image_shape=shape)
        what = f"{num} draws from the prior"
    tr.run.save_figure(fig, "samples")
    data.update(num=num, what=what, means=means)
    given, and_y, rows = ((" | y", ", y", ", one row per label y") if "labels" in what
                          else ("", "", ""))
    if means:
        return (f"`samples.png`: {what}, shown as the decoded means E[x | z{and_y}] of "
                f"z ~ p(z{given}){rows}.")
    return (f"`samples.png`: {what}: z ~ p(z{given}), then x ~ p(x | z{and_y}){rows}; "
            "`ppvae sample --means` shows the decoded means instead.")


def _top_latent(tr: Trained, x: torch.Tensor, kw: dict
                ) -> tuple[str, tuple[int, ...], bool, list[str]]:
    """The model's first latent site (name, event shape, whether discrete) and the others."""
    from pyro import poutine
    from pyro.poutine.util import prune_subsample_sites

    from ..core.contract import ContractError, is_latent

    with torch.no_grad():
        trace = prune_subsample_sites(poutine.trace(tr.model).get_trace(x, **kw))
    latents = [(n, s) for n, s in trace.nodes.items() if is_latent(s)]
    if not latents:
        raise ContractError("the model has no latent site")
    name, site = latents[0]
    fn: Any = site["fn"]  # a distribution (pyro types trace nodes loosely)
    return (name, tuple(fn.event_shape), bool(getattr(fn.support, "is_discrete", False)),
            [n for n, _ in latents[1:]])


def _latent_figures(tr: Trained, x, kw, rows: Rows, shape, skipped: dict
                    ) -> tuple[list[str], list[str]]:
    """manifold.png, traversals.png and interpolation.png, each when it applies.

    Returns the files written and their report lines; the reasons of the others go into
    ``skipped``.
    """
    from ..analysis import plots

    labels = [int(i) for i in rows.indices]
    try:
        latent, event, discrete, others = _top_latent(tr, x, kw)
    except (ValueError, NotImplementedError) as e:
        for f in ("manifold.png", "traversals.png", "interpolation.png"):
            skipped[f] = str(e)
        return [], []
    done, lines = [], []
    conditional = MODELS[tr.config["model"]].takes_labels
    figures = {
        "manifold.png": lambda: _manifold(tr, x, latent, event, discrete, conditional, shape),
        "traversals.png": lambda: _traversals(tr, x, kw, latent, labels, shape),
        "interpolation.png": lambda: (plots.interpolation(
            tr.model, tr.guide, x, steps=8, num_pairs=_PAIRS, latent=latent, image_shape=shape,
            labels=labels, datapoint_label="test row", model_kwargs=kw),
            f"`interpolation.png`: decoded means along straight lines between the encodings "
            f"E_q[{latent} | x] of test rows " + ", ".join(
                f"{labels[2 * r]} → {labels[2 * r + 1]}" for r in range(_PAIRS))
            + " (t from 0 to 1 under the columns; the inputs at both ends)."),
    }
    for name, draw in figures.items():
        try:
            fig, line = draw()
        except (ValueError, NotImplementedError) as e:  # ContractError is a ValueError
            skipped[name] = str(e)
            continue
        tr.run.save_figure(fig, name.removesuffix(".png"))
        done.append(name)
        lines.append(line)
    if done and others:
        lines.append(f"In these figures the other latent sites ({', '.join(others)}) are drawn "
                     f"from the model given '{latent}', once per image.")
    return done, lines


def _manifold(tr: Trained, x, latent: str, event: tuple, discrete: bool, conditional: bool,
              shape):
    from ..analysis.plots import latent_manifold

    if discrete:
        raise ValueError(f"the latent '{latent}' is discrete")
    if event != (2,):
        raise ValueError(f"the latent '{latent}' has {math.prod(event)} coordinates; the "
                         "manifold needs 2")
    if conditional:
        raise ValueError("the model takes labels: its manifold depends on the label")
    fig = latent_manifold(tr.model, x, latent=latent, n=15, image_shape=shape)
    return fig, (f"`manifold.png`: decoded means E[x | z] over a 15 x 15 grid of the prior's "
                 f"quantiles of the 2-D latent '{latent}' (z values on the axes).")


def _traversals(tr: Trained, x, kw, latent: str, labels: list[int], shape):
    from ..analysis.plots import encode, latent_traversals

    one = {k: v[:1] for k, v in kw.items()}
    z0 = encode(tr.guide, x[:1], latent=latent, model_kwargs=one)
    k = int(z0.reshape(-1).shape[0])
    dims, how = list(range(k)), "every coordinate"
    if k > _MAX_TRAVERSED:
        dims, how = _active_dims(tr, latent, x.device), (
            f"the {_MAX_TRAVERSED} of {k} coordinates whose encoder means vary most over 200 "
            "test rows")
    fig = latent_traversals(tr.model, tr.guide, x[:1], latent=latent, dims=dims,
                            image_shape=shape, label=labels[0], datapoint_label="test row",
                            model_kwargs=one)
    return fig, (f"`traversals.png`: decoded means with one coordinate of '{latent}' set to "
                 f"-3 ... 3 (under the columns) and the others at E_q[{latent} | x] of test "
                 f"row {labels[0]}; rows: {how}.")


def _active_dims(tr: Trained, latent: str, device) -> list[int]:
    """The coordinates whose encoder means vary most over (up to) 200 test rows."""
    from ..analysis.plots import encode

    rows = Rows.select(tr.data, "test", 200, tr.config.get("seed", 0))
    x = rows.take(tr.data).to(device)
    kw = {k: v.to(device) for k, v in rows.kw(tr.config, tr.data).items()}
    z = encode(tr.guide, x, latent=latent, model_kwargs=kw).reshape(x.shape[0], -1)
    top = torch.argsort(z.var(0), descending=True)[:_MAX_TRAVERSED]
    return sorted(int(i) for i in top)
