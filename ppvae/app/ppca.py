"""``ppvae ppca``: the PPCA study, estimated bounds and gaps next to their closed-form values.

On data from a probabilistic PCA (synthetic with known parameters, or the user's own), the
model is set to the generating parameters (synthetic data) or to the maximum-likelihood
parameters (Tipping and Bishop 1999; the user's data), several guides are
fitted with Pyro's SVI (Trace_ELBO), and for each guide the table shows the Monte Carlo ELBO and
IWAE bounds from :func:`ppvae.log_weights` next to the exact log p(x) and the exact inference
gap KL(q || p(z | x)). Where the numbers agree within their standard errors, the estimators are
honest; that is the point of the study. The gap of the best diagonal family (the mean-field
optimum) is shown as the floor the diagonal guides can reach. :func:`main` is the command: the
study on synthetic data or on the user's ``.npy`` / ``.csv`` matrix, printed as a table.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from ..analysis.ppca import mean_field_gap, ppca_kl_to_posterior, ppca_log_marginal, ppca_mle
from ..core.bounds import elbo, iwae
from .inputs import UsageError, load_matrix, nonnegative_int, positive_int

__all__ = ["PPCARow", "PPCAStudy", "add_arguments", "main", "run_ppca_study"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``ppvae ppca``."""
    p.add_argument("--data", help=".npy or .csv matrix [N, D]; synthetic PPCA data if absent")
    p.add_argument("--latent-dim", type=positive_int, default=4)
    p.add_argument("--num-data", type=positive_int, default=500, help="synthetic data only")
    p.add_argument("--data-dim", type=positive_int, default=20, help="synthetic data only")
    p.add_argument("--steps", type=positive_int, default=3000, help="SVI steps per guide")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--iwae-k", type=positive_int, default=100)
    p.add_argument("--seed", type=nonnegative_int, default=0)


def main(args) -> int:
    """Run ``ppvae ppca``: print the study's table; returns the exit code."""
    x = load_matrix(args.data) if args.data else None
    dim = x.shape[1] if x is not None else args.data_dim
    if not 0 < args.latent_dim < dim:
        raise UsageError(f"--latent-dim must be between 1 and D - 1 = {dim - 1} (D: the "
                         f"{'columns of the data' if x is not None else '--data-dim'}), got "
                         f"{args.latent_dim}")
    if x is None and args.num_data < 2:
        raise UsageError(f"--num-data must be at least 2, got {args.num_data}")
    study = run_ppca_study(
        x, latent_dim=args.latent_dim, num_data=args.num_data, data_dim=args.data_dim,
        steps=args.steps, num_samples=args.num_samples, iwae_k=args.iwae_k, seed=args.seed,
    )
    print(study.to_markdown())
    return 0


class PPCARow(NamedTuple):
    """One guide's line of the PPCA study: bounds, estimated and exact gaps, training time."""
    guide: str
    elbo: float
    elbo_se: float
    iwae: float
    iwae_se: float
    gap_estimated: float  # exact log p(x) - ELBO estimate
    gap_exact: float  # mean KL(q || p(z | x)), closed form
    train_seconds: float


class PPCAStudy(NamedTuple):
    """The PPCA study: data sizes, exact references and one row per guide."""
    num_data: int
    data_dim: int
    latent_dim: int
    params: str  # "generating" or "maximum likelihood"
    log_px: float  # mean exact log p(x) under the model's parameters
    mean_field_gap: float
    iwae_k: int
    rows: list[PPCARow]

    def to_markdown(self) -> str:
        """The study as a header paragraph and a markdown table."""
        head = (
            f"PPCA study: N = {self.num_data}, D = {self.data_dim}, K = {self.latent_dim}; "
            f"model at the {self.params} parameters; exact mean log p(x) = {self.log_px:.4f} "
            f"nats; best mean-field (diagonal) gap = {self.mean_field_gap:.4f} nats.\n\n"
            f"| guide | ELBO | IWAE_{self.iwae_k} | gap, estimated | gap, exact (KL) "
            f"| train s |\n|---|---|---|---|---|---|\n"
        )
        body = "".join(
            f"| {r.guide} | {r.elbo:.4f} ± {r.elbo_se:.4f} | {r.iwae:.4f} ± {r.iwae_se:.4f} "
            f"| {r.gap_estimated:.4f} ± {r.elbo_se:.4f} | {r.gap_exact:.4f} "
            f"| {r.train_seconds:.1f} |\n"
            for r in self.rows
        )
        return head + body


def _train(model, guide, x, steps: int, lr: float) -> float:
    opt = ClippedAdam({"lr": lr, "lrd": 0.001 ** (1 / steps)})  # decays to lr / 1000
    elbo_ = Trace_ELBO(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(model, guide, opt, elbo_)
    t0 = time.perf_counter()
    for _ in range(steps):
        svi.step(x)
    return time.perf_counter() - t0


def run_ppca_study(
    x: torch.Tensor | None = None,
    *,
    latent_dim: int = 4,
    num_data: int = 500,
    data_dim: int = 20,
    sigma: float = 0.5,
    steps: int = 2500,
    lr: float = 0.05,
    num_samples: int = 1000,
    iwae_k: int = 100,
    seed: int = 0,
) -> PPCAStudy:
    """Run the study on ``x`` ([N, D]) or on synthetic PPCA data; returns a :class:`PPCAStudy`."""
    from ..data import ppca_dataset
    from ..guides import AmortizedLinearGaussian, MLPEncoder
    from ..models import PPCA

    pyro.set_rng_seed(seed)
    if x is None:
        sim = ppca_dataset(num_data, data_dim, latent_dim, sigma, seed=seed)
        x, (W, b, s), which = sim.x, (sim.W, sim.b, sim.sigma), "generating"
    else:
        x = x.to(torch.float64)
        (W, b, s), which = ppca_mle(x, latent_dim), "maximum likelihood"
    n, d = x.shape
    log_px = ppca_log_marginal(W, b, s, x)  # [N]
    model = PPCA(d, latent_dim, W=W, b=b, sigma=s, fixed=True)
    guides = {
        "exact posterior": (AmortizedLinearGaussian.from_ppca(W, b, s), 0),
        "linear, full cov. (SVI)": (AmortizedLinearGaussian(d, latent_dim, "full"), steps),
        "linear, diagonal (SVI)": (AmortizedLinearGaussian(d, latent_dim, "diag"), steps),
        "MLP encoder, diagonal (SVI)": (
            MLPEncoder(d, latent_dim, (64,)).to(torch.float64), steps),
    }
    rows = []
    for label, (guide, n_steps) in guides.items():
        guide = guide.to(torch.float64)
        secs = _train(model, guide, x, n_steps, lr) if n_steps else 0.0
        with torch.no_grad():
            e = elbo(model, guide, x, num_samples)
            iw = iwae(model, guide, x, iwae_k, num_estimates=max(2, num_samples // iwae_k))
            q = guide.distribution(x)
            q_scale = q.scale_tril if hasattr(q, "scale_tril") else q.base_dist.scale
            kl = ppca_kl_to_posterior(W, b, s, x, q.mean, q_scale)
        rows.append(PPCARow(
            label, e.mean, e.mean_stderr, iw.mean, iw.mean_stderr,
            float(log_px.mean()) - e.mean, float(kl.mean()), secs,
        ))
    return PPCAStudy(n, d, latent_dim, which, float(log_px.mean()),
                     float(mean_field_gap(W, s)), iwae_k, rows)
