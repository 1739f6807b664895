"""Posterior comparison on PPCA, where KL(q || posterior) has a closed form: the exact guide is
at KL ~ 0 from the Gaussian fit of MCMC and the best diagonal guide at the mean-field gap."""

import torch
from stats import z_threshold

import ppvae
import ppvae.analysis.ppca
from ppvae.analysis.compare import PosteriorComparison, compare_posteriors
from ppvae.guides.linear import AmortizedLinearGaussian
from ppvae.infer.diagnostics import diagnostics
from ppvae.infer.hmc import hmc
from ppvae.models.ppca import PPCA


def test_compare_guides_with_hmc_on_ppca(float64, tmp_path):
    base = ppvae.data.ppca_dataset(6, 8, 2, 0.5, seed=3)
    W = base.W @ torch.tensor([[1.0, 0.9], [0.0, 0.3]])  # nearly collinear: correlated posterior
    x = base.z @ W.T + base.b + 0.5 * torch.randn(6, 8)
    data = base._replace(W=W, x=x)
    model = PPCA(8, 2, W=data.W, b=data.b, sigma=data.sigma, fixed=True)
    full = AmortizedLinearGaussian.from_ppca(data.W, data.b, data.sigma, "full", name="cmp_full")
    diag = AmortizedLinearGaussian.from_ppca(data.W, data.b, data.sigma, "diag", name="cmp_diag")
    mc = hmc(model, data.x, num_chains=4, num_warmup=200, num_samples=600, num_leapfrog=6)
    cmp = compare_posteriors(model, data.x, mc, {"exact q": full, "mean-field q": diag},
                             datapoints=[0, 3, 5], num_samples=4000)
    assert isinstance(cmp, PosteriorComparison)
    assert [s.method for s in cmp.summaries] == ["mcmc", "exact q", "mean-field q"]
    ref, q_full, q_diag = cmp.summaries
    assert ref.mean.shape == (3, 2) and ref.corr.shape == (3, 2, 2) and ref.kl_to_mcmc is None
    mean, cov = ppvae.ppca_posterior(data.W, data.b, data.sigma, data.x[[0, 3, 5]])
    # means: MCMC (within its ArviZ MCSE) and the exact guide (4000 draws: se = sd / 63) agree
    # with the closed form
    sd = cov.diagonal().sqrt()
    assert ((q_full.mean - mean) / (sd / 4000**0.5)).abs().max() < 4
    mcse = torch.as_tensor(diagnostics(mc.to_inference_data()).mcse_mean)[[0, 3, 5]]
    assert ((ref.mean - mean) / mcse).abs().max() < z_threshold(6), (ref.mean - mean) / mcse
    true_corr = cov[0, 1] / (sd[0] * sd[1])
    assert (q_full.corr[:, 0, 1] - true_corr).abs().max() < 0.05
    assert q_diag.corr[:, 0, 1].abs().max() < 0.05
    # KL to the Gaussian fit of 2400 MCMC draws: exact guide ~0, diagonal guide ~ mean-field gap
    gap = float(ppvae.analysis.ppca.mean_field_gap(data.W, data.sigma))
    assert q_full.kl_to_mcmc.abs().max() < 0.05 + 4 * float(q_full.kl_stderr.max())
    assert (q_diag.kl_to_mcmc - gap).abs().max() < 0.05 + 4 * float(q_diag.kl_stderr.max())
    assert gap > 0.1  # the test is informative: the two guides differ clearly
    md = cmp.to_markdown()
    assert "mean-field q" in md and md.count("\n") == 1 + 3 * 3
    path = tmp_path / "posteriors.png"
    cmp.plot(str(path))
    assert path.stat().st_size > 1000
