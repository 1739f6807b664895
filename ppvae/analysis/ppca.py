"""Closed-form answers for probabilistic PCA (Tipping and Bishop 1999).

The model: z ~ N(0, I_K), x | z ~ N(W z + b, sigma^2 I_D), W of shape [D, K]. Then

* marginal:   x ~ N(b, W W^T + sigma^2 I_D)
* posterior:  z | x ~ N(M^-1 W^T (x - b), sigma^2 M^-1),   M = W^T W + sigma^2 I_K
* maximum likelihood (Tipping and Bishop 1999, eqs. 7-8): b = mean(x), and with the sample
  covariance's eigenpairs (lambda_j, u_j) in decreasing order,
  sigma^2 = mean_{j > K} lambda_j,  W = U_K (Lambda_K - sigma^2 I)^{1/2} (up to a rotation).

Because the exact posterior is Gaussian with a covariance shared by all datapoints, every
inference gap has a closed form: KL(q || p(z | x)) for any Gaussian q, and the best mean-field
(diagonal) Gaussian's gap 0.5 (sum_i log Lambda_ii - log det Lambda), Lambda = M / sigma^2 the
posterior precision (the KL of the optimal factorized approximation, e.g. Bishop 2006, 10.1.2).
These are the references the rest of ppvae is tested against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import LowRankMultivariateNormal, MultivariateNormal, kl_divergence

__all__ = [
    "PPCAParams",
    "gaussian_kl",
    "mean_field_gap",
    "ppca_kl_to_posterior",
    "ppca_log_marginal",
    "ppca_mle",
    "ppca_posterior",
]


class PPCAParams(NamedTuple):
    """PPCA parameters: loading matrix W, offset b and noise scale sigma."""
    W: torch.Tensor  # [D, K]
    b: torch.Tensor  # [D]
    sigma: torch.Tensor  # [] noise standard deviation


def _check(W: torch.Tensor, b: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
    if W.dim() != 2:
        raise ValueError(f"W must be [D, K], got shape {tuple(W.shape)}")
    if b.shape != W.shape[:1]:
        raise ValueError(f"b must be [D] = [{W.shape[0]}], got shape {tuple(b.shape)}")
    sigma = torch.as_tensor(sigma, dtype=W.dtype, device=W.device)
    if sigma.numel() != 1 or not bool(sigma > 0):
        raise ValueError(f"sigma must be a positive scalar, got {sigma}")
    return W, b, sigma.reshape(())


def ppca_posterior(W, b, sigma, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact posterior p(z | x_n): means ``[N, K]`` and the shared covariance ``[K, K]``."""
    W, b, sigma = _check(W, b, sigma)
    k = W.shape[1]
    m = W.T @ W + sigma**2 * torch.eye(k, dtype=W.dtype, device=W.device)  # [K, K]
    chol = torch.linalg.cholesky(m)
    mean = torch.cholesky_solve(((x - b) @ W).T, chol).T  # [N, K]
    cov = sigma**2 * torch.cholesky_inverse(chol)  # [K, K]
    return mean, cov


def ppca_log_marginal(W, b, sigma, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x_n) under N(b, W W^T + sigma^2 I), per datapoint ``[N]`` (Woodbury form)."""
    W, b, sigma = _check(W, b, sigma)
    if x.shape[-1] != W.shape[0]:
        raise ValueError(f"x has {x.shape[-1]} columns but W has D = {W.shape[0]} rows")
    diag = (sigma**2).expand(W.shape[0])
    return LowRankMultivariateNormal(b, W, diag).log_prob(x)


def ppca_mle(x: torch.Tensor, latent_dim: int) -> PPCAParams:
    """Maximum-likelihood W, b, sigma from data ``[N, D]`` (Tipping and Bishop 1999)."""
    n, d = x.shape
    if not 0 < latent_dim < d:
        raise ValueError(f"latent_dim must be in [1, {d - 1}] for D = {d}, got {latent_dim}")
    b = x.mean(0)
    xc = x - b
    cov = xc.T @ xc / n  # [D, D] maximum-likelihood sample covariance
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[latent_dim:].mean()
    scale = (evals[:latent_dim] - sigma2).clamp(min=0).sqrt()
    W = evecs[:, :latent_dim] * scale  # [D, K]
    return PPCAParams(W, b, sigma2.sqrt())


def gaussian_kl(q_loc, q_scale_tril, p_loc, p_cov) -> torch.Tensor:
    """KL(N(q_loc, L L^T) || N(p_loc, p_cov)), batched; diagonal q: pass a [.., K] scale vector."""
    if q_scale_tril.dim() == q_loc.dim():  # diagonal scales [.., K]
        q_scale_tril = torch.diag_embed(q_scale_tril)
    q = MultivariateNormal(q_loc, scale_tril=q_scale_tril)
    p = MultivariateNormal(p_loc, covariance_matrix=p_cov)
    return kl_divergence(q, p)


def ppca_kl_to_posterior(W, b, sigma, x, q_loc, q_scale_tril) -> torch.Tensor:
    """KL(q(z | x_n) || p(z | x_n)) per datapoint ``[N]`` for a Gaussian q.

    ``q_loc`` is ``[N, K]``; ``q_scale_tril`` is ``[N, K, K]`` or ``[K, K]`` (Cholesky factor)
    or ``[N, K]`` / ``[K]`` (diagonal standard deviations). Then
    ELBO_q(x_n) = log p(x_n) - KL_n exactly.
    """
    mean, cov = ppca_posterior(W, b, sigma, x)
    if q_scale_tril.dim() == 1:
        q_scale_tril = q_scale_tril.expand_as(q_loc)
    return gaussian_kl(q_loc, q_scale_tril, mean, cov)


def mean_field_gap(W, sigma) -> torch.Tensor:
    """KL of the best diagonal Gaussian to the PPCA posterior (the same for every datapoint).

    0.5 (sum_i log Lambda_ii - log det Lambda) with Lambda = (W^T W + sigma^2 I) / sigma^2.
    """
    sigma = torch.as_tensor(sigma, dtype=W.dtype, device=W.device)
    k = W.shape[1]
    prec = (W.T @ W + sigma**2 * torch.eye(k, dtype=W.dtype, device=W.device)) / sigma**2
    return 0.5 * (torch.diagonal(prec).log().sum() - torch.logdet(prec))
