"""Reconstruction error, of clean or corrupted inputs: how well a pair reconstructs x.

For a model p(x | z) p(z) and a guide q(z | x), the reconstruction error of datapoint x_n from
the input x~_n (x_n itself, or a corrupted copy drawn from a :class:`ppvae.Corruption`) is

    R_n = - E_{q(z | x~_n)} log p(x_n | z)

the negative reconstruction term of the ELBO (in nats; for a Bernoulli likelihood the binary
cross-entropy summed over pixels). It is estimated with ``num_samples`` draws of z (one draw is
exact for a point-mass guide such as the autoencoder's). With a corruption it is the denoising
criterion of Vincent et al. (2008, 2010): reconstruct the clean x from a corrupted input.

Every observed site of the model inside the per-datapoint plate counts; the corruption is drawn
with a seeded generator, so two pairs compared on the same seed see the same corrupted inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ..core.contract import is_observed, per_datapoint, site_log_density
from ..core.modes import evaluation
from ..core.records import frame
from ..core.weights import pair_info
from ..train.corruption import Corruption

__all__ = ["Reconstruction", "reconstruction_error"]


class Reconstruction(NamedTuple):
    """Per-datapoint reconstruction error -E_q log p(x_n | z), z ~ q(z | input_n)."""

    per_datapoint: torch.Tensor  # [N] nats
    stderr: torch.Tensor  # [N] Monte Carlo standard error over the guide's draws (0 for one)
    num_samples: int  # draws of z per datapoint
    corruption: str | None  # e.g. "masking 0.25"; None: the clean inputs

    @property
    def mean(self) -> float:
        """The mean reconstruction error over datapoints (nats)."""
        return float(self.per_datapoint.mean())

    @property
    def mean_stderr(self) -> float:
        """Standard error of :attr:`mean` over datapoints (the spread of the data dominates)."""
        n = self.per_datapoint.numel()
        return float(self.per_datapoint.std() / math.sqrt(n)) if n > 1 else math.nan

    def __repr__(self) -> str:
        source = "clean inputs" if self.corruption is None else \
            f"inputs corrupted by {self.corruption}"
        return (f"Reconstruction(-E_q log p(x | z) from {source}: mean {self.mean:.4f} ± "
                f"{self.mean_stderr:.4f} nats over {self.per_datapoint.numel()} datapoints, "
                f"{self.num_samples} draw(s) each)")

    def to_dataframe(self):
        """A pandas DataFrame with one row per datapoint: error and its standard error."""
        return frame({"reconstruction_error": self.per_datapoint, "stderr": self.stderr})


def _observed_log_lik(model, guide_tr, x: torch.Tensor, kwargs: Mapping[str, Any], info
                      ) -> torch.Tensor:
    """[N] sum of the model's observed log densities at the guide trace's latents."""
    model_tr = prune_subsample_sites(
        poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, **kwargs))
    n = x.shape[0]
    total = x.new_zeros(n, dtype=torch.get_default_dtype()) if not x.is_floating_point() \
        else x.new_zeros(n)
    for site in model_tr.nodes.values():
        if site["type"] == "sample" and is_observed(site):
            lp = per_datapoint(site_log_density(site), info.particle_dim, torch.Size([1, n]))
            total = total + lp[0].to(total.dtype)
    return total


def reconstruction_error(model, guide, x: torch.Tensor, *, corruption: Corruption | None = None,
                         num_samples: int = 1, seed: int = 0,
                         model_kwargs: Mapping[str, Any] | None = None,
                         batch_size: int = 1000) -> Reconstruction:
    """-E_{q(z | x~)} log p(x | z) per datapoint: the reconstruction error of ``x``.

    Args:
        model: the generative model (contract-keeping).
        guide: its guide; it sees ``corruption(x)`` when a corruption is given, else ``x``.
        x: the clean data [N, ...]; the model always scores the clean rows.
        corruption: e.g. ``ppvae.Corruption("masking", 0.25)``; None: clean inputs.
        num_samples: draws of z per datapoint (1 is exact for a point-mass guide).
        seed: seeds the corruption's noise (the guide's draws use torch's global generator).
        model_kwargs: keyword arguments of model and guide (``y=`` labels), per row.
        batch_size: rows evaluated at once.

    Returns:
        A :class:`Reconstruction` (nats per datapoint; lower is better).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    kwargs = dict(model_kwargs or {})
    n = x.shape[0]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noisy = x if corruption is None else corruption(x, gen)
    rows = []
    with evaluation(model, guide), torch.no_grad():
        info = pair_info(model, guide, x[:min(n, 2)], None,
                         {k: v[:min(n, 2)] for k, v in kwargs.items()}, eval_modules=False)
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            kw = {k: v[sl] if torch.is_tensor(v) and v.shape[:1] == (n,) else v
                  for k, v in kwargs.items()}
            draws = []
            for _ in range(num_samples):
                guide_tr = poutine.trace(guide).get_trace(noisy[sl], **kw)
                draws.append(_observed_log_lik(model, guide_tr, x[sl], kw, info))
            rows.append(-torch.stack(draws))  # [S, B]
    err = torch.cat(rows, dim=1)  # [S, N]
    stderr = err.std(0) / math.sqrt(num_samples) if num_samples > 1 else torch.zeros_like(err[0])
    return Reconstruction(err.mean(0), stderr, num_samples,
                          None if corruption is None else corruption.describe())
