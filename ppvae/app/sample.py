"""``ppvae sample``: images decoded from the prior of a trained run.

:func:`sample_run` draws from the prior of the run's model, saves the grid as ``samples.png``
and writes the report's samples section. A model that takes labels (the zoo's
``takes_labels``) gets one row per label instead of ``num`` unconditional draws.
"""

from __future__ import annotations

import argparse

import pyro
import torch

from .inputs import nonnegative_int, positive_int
from .runs import provenance, record_warnings
from .trained import Trained, locked_run
from .zoo import MODELS

__all__ = ["add_arguments", "main", "sample_run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae sample``."""
    p.add_argument("run", help="run directory")
    p.add_argument("--num", type=positive_int, default=64, help="images (a conditional model shows "
                   "one row per label)")
    p.add_argument("--seed", type=nonnegative_int,
                   help="seed of the draws (default: the run's seed)")


def main(args) -> int:
    """Run ``ppvae sample``; returns the exit code."""
    with locked_run(args.run) as tr:
        print(f"wrote {tr.run.file(sample_run(tr, num=args.num, seed=args.seed))}")
    return 0


def sample_run(tr: Trained, *, num: int = 64, seed: int | None = None) -> str:
    """Prior samples figure (per label for a conditional model); writes the samples section.

    ``seed`` seeds the draws (None: the run's seed). Returns the figure's file name.
    """
    from ..analysis.plots import sample_grid

    seed = tr.config.get("seed", 0) if seed is None else seed
    pyro.set_rng_seed(seed)
    template = tr.data.test[:1]  # shape and device only: no row's values are used
    with record_warnings() as found:
        if MODELS[tr.config["model"]].takes_labels:
            assert tr.data.train_labels is not None  # build_model refuses it without labels
            c = int(tr.data.train_labels.max()) + 1
            per = c  # a c x c grid: one row per label
            y = torch.arange(c, device=template.device).repeat_interleave(per)  # [c * per]
            fig = sample_grid(tr.model, template, c * per, image_shape=tr.data.image_shape,
                              model_kwargs={"y": y})
            what = f"{per} draws for each of {c} labels"
        else:
            fig = sample_grid(tr.model, template, num, image_shape=tr.data.image_shape)
            what = f"{num} draws from the prior"
    tr.run.save_figure(fig, "samples")
    tr.run.set_section("samples", "Samples", f"`samples.png`: decoded means of {what}.",
                       {"num": num, "what": what}, provenance=provenance(tr.run, seed=seed),
                       warnings=found, files=["samples.png"])
    return "samples.png"
