"""``ppvae sample``: images decoded from the prior of a trained run.

:func:`sample_run` draws from the prior of the run's model, saves the grid as ``samples.png``
and writes the report's samples section. A model that takes labels (the zoo's
``takes_labels``) gets one row per label instead of ``num`` unconditional draws.
"""

from __future__ import annotations

import argparse

import torch

from .trained import Trained, open_run
from .zoo import MODELS

__all__ = ["add_arguments", "main", "sample_run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae sample``."""
    p.add_argument("run", help="run directory")
    p.add_argument("--num", type=int, default=64, help="images (a conditional model shows "
                   "one row per label)")


def main(args) -> int:
    """Run ``ppvae sample``; returns the exit code."""
    tr = open_run(args.run)
    print(f"wrote {tr.run.file(sample_run(tr, num=args.num))}")
    return 0


def sample_run(tr: Trained, *, num: int = 64) -> str:
    """Prior samples figure (per label for a conditional model); writes the samples section."""
    from ..analysis.plots import sample_grid

    template = tr.data.test[:1]
    if MODELS[tr.config["model"]].takes_labels:
        assert tr.data.train_labels is not None  # build_model refuses a label model without them
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
                       {"num": num, "what": what})
    return "samples.png"
