"""Per-datapoint VI (ppvae.fit_local) against the closed forms of probabilistic PCA.

Data come from ppvae.data.ppca_dataset's generating parameters (a random, non-orthogonal W,
so the posterior is correlated and the best diagonal Gaussian has a non-zero gap). Monte Carlo
comparisons use |estimate - truth| < z standard errors with z from tests/stats.py (false-alarm
rate 1e-3 per check, one-sided where the claim is); the optimizer's own residual (the
closed-form KL of the fitted q above its family's optimum) is checked separately against a
stated tolerance.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from stats import z_threshold

import ppvae
import ppvae.analysis.ppca
import ppvae.infer.local.vi
from ppvae.guides import AmortizedLinearGaussian
from ppvae.models import PPCA

Z = z_threshold(1)  # two-sided: an estimate against a closed form
Z1 = z_threshold(1, two_sided=False)  # one-sided: an improvement, a bound

OPT_TOL = 2e-3  # nats: mean residual KL above the family's optimum after fit_local


@pytest.fixture
def ppca(float64):
    d = ppvae.data.ppca_dataset(100, 10, 3, 0.5, seed=1)
    model = PPCA(10, 3, W=d.W, b=d.b, sigma=d.sigma, fixed=True)
    return d, model, ppvae.ppca_log_marginal(d.W, d.b, d.sigma, d.x)


def _kl(d, q):
    """Closed-form KL(q_n || p(z | x_n)) of a Gaussian local guide, [N]."""
    with torch.no_grad():
        qd = q.distribution(d.x)
        if isinstance(qd, torch.distributions.MultivariateNormal):
            return ppvae.analysis.ppca.ppca_kl_to_posterior(d.W, d.b, d.sigma, d.x, qd.loc,
                                                            qd.scale_tril)
        return ppvae.analysis.ppca.ppca_kl_to_posterior(d.W, d.b, d.sigma, d.x, qd.base_dist.loc,
                                          qd.base_dist.scale)


def test_local_diag_reaches_mean_field_optimum(ppca):
    d, model, log_px = ppca
    mf = ppvae.analysis.ppca.mean_field_gap(d.W, d.sigma)
    assert mf > 0.05  # the test data have a correlated posterior
    q = ppvae.fit_local(model, d.x, "diag", num_steps=1000)
    kl = _kl(d, q)
    assert (kl >= mf - 1e-9).all()  # no diagonal Gaussian beats the mean-field optimum
    assert float(kl.mean() - mf) < OPT_TOL
    e = ppvae.elbo(model, q, d.x, num_samples=2000)
    gap = (log_px - e.per_datapoint).mean()
    assert abs(float(gap - kl.mean())) < Z * e.mean_stderr  # MC ELBO agrees with closed form
    assert q.fit.num_steps <= 1000 and q.fit.converged.shape == (100,)


def test_local_full_covariance_closes_the_gap(ppca):
    d, model, log_px = ppca
    q = ppvae.fit_local(model, d.x, "full", num_steps=1000)
    kl = _kl(d, q)
    assert float(kl.max()) < OPT_TOL
    e = ppvae.elbo(model, q, d.x, num_samples=1000)
    assert abs(float((log_px - e.per_datapoint).mean() - kl.mean())) < Z * e.mean_stderr + 1e-9
    b = ppvae.iwae(model, q, d.x, k=100)  # the local guide keeps the contract
    assert torch.allclose(b.per_datapoint, log_px, atol=1e-2)


def test_semi_amortized_init_starts_at_the_guide(ppca):
    d, model, _ = ppca
    guide = AmortizedLinearGaussian(10, 3, "full", init_scale=0.3).to(torch.float64)
    q_amortized = guide.distribution(d.x)
    for family in ("full", "flow"):
        q = ppvae.fit_local(model, d.x, family, guide, num_steps=0)
        z = q_amortized.sample((5,))  # [5, N, K]
        lp = q.distribution(d.x).log_prob(z)
        assert torch.allclose(lp, q_amortized.log_prob(z), atol=1e-8), family
    q = ppvae.fit_local(model, d.x, "diag", guide, num_steps=0)
    qd = q.distribution(d.x).base_dist
    assert torch.allclose(qd.loc, q_amortized.loc)
    assert torch.allclose(qd.scale, q_amortized.stddev)


def test_flow_family_improves_on_its_initialization(ppca):
    d, model, log_px = ppca
    start = ppvae.fit_local(model, d.x, "flow", num_steps=0)
    q = ppvae.fit_local(model, d.x, "flow", num_steps=300, num_flows=2)
    e0 = ppvae.elbo(model, start, d.x, num_samples=200)
    e1 = ppvae.elbo(model, q, d.x, num_samples=200)
    assert e1.mean - e0.mean > Z1 * (e0.mean_stderr + e1.mean_stderr)
    assert e1.mean < float(log_px.mean()) + Z1 * e1.mean_stderr  # still a lower bound


def test_amortized_full_guide_trained_has_zero_amortization_gap(ppca):
    d, model, log_px = ppca
    guide = AmortizedLinearGaussian(10, 3, "full").to(torch.float64)
    svi = SVI(model, guide, ClippedAdam({"lr": 0.1, "lrd": 1e-3 ** (1 / 1000)}),
              Trace_ELBO(num_particles=8, vectorize_particles=True))
    for _ in range(1000):
        svi.step(d.x)
    q_star = ppvae.fit_local(model, d.x, "full", guide, num_steps=500)
    report = ppvae.gaps(model, {"full": guide}, d.x, log_px=log_px, local={"full": q_star},
                        num_samples=1000)
    with torch.no_grad():
        qa = guide.distribution(d.x)
        kl_amortized = ppvae.analysis.ppca.ppca_kl_to_posterior(d.W, d.b, d.sigma, d.x, qa.loc,
                                                                qa.scale_tril)
    closed = float((kl_amortized - _kl(d, q_star)).mean())  # amortization gap, closed form
    assert abs(closed) < OPT_TOL
    s = report.row("full").summary("amortization")
    assert abs(s.mean - closed) < Z * s.mc_se + 1e-9  # the report's estimate is unbiased
    assert abs(s.mean) < Z * s.mc_se + OPT_TOL


def test_report_diag_approximation_gap_is_the_closed_form(ppca):
    d, model, log_px = ppca
    guide = AmortizedLinearGaussian.from_ppca(d.W, d.b, d.sigma, "diag")
    report = ppvae.gaps(model, guide, d.x, log_px=log_px, num_samples=2000, local_steps=500)
    row = report.rows[0]
    assert row.family == "diag" and row.estimators.log_px == "exact"
    s = row.summary("approximation")
    mf = float(ppvae.analysis.ppca.mean_field_gap(d.W, d.sigma))
    assert abs(s.mean - mf) < Z * s.mc_se + OPT_TOL
    # the exact mean-field posterior is amortizable on PPCA: no amortization gap
    a = row.summary("amortization")
    assert abs(a.mean) < Z * a.mc_se + OPT_TOL


def _positive_model(x):
    """A model with a positive [2, 2] latent and a real [3] latent (two sites, constraints)."""
    with pyro.plate("data", x.shape[0], dim=-1):
        s = pyro.sample("s", dist.Gamma(x.new_full((2, 2), 2.0), 2.0).to_event(2))  # [.., N, 2, 2]
        z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))  # [.., N, 3]
        loc = torch.cat([s.flatten(-2), z], -1)  # [.., N, 7]
        pyro.sample("x", dist.Normal(loc, 0.3).to_event(1), obs=x)


def test_any_model_constrained_and_multi_site_latents():
    x = torch.randn(40, 7).abs()
    sites = ppvae.infer.local.vi.latent_sites(_positive_model, x)
    assert [(s.name, tuple(s.event_shape)) for s in sites] == [("s", (2, 2)), ("z", (3,))]
    prior = ppvae.elbo(_positive_model, ppvae.fit_local(_positive_model, x, num_steps=0), x, 200)
    q = ppvae.fit_local(_positive_model, x, "full", num_steps=300)
    post = ppvae.elbo(_positive_model, q, x, 200)
    assert post.mean - prior.mean > Z1 * (post.mean_stderr + prior.mean_stderr)
    assert set(q.distributions()) == {"s", "z"}
    assert (q.distributions()["s"].sample() > 0).all()


def test_errors_name_the_problem(ppca):
    d, model, _ = ppca
    q = ppvae.fit_local(model, d.x, "diag", num_steps=0)
    with pytest.raises(ppvae.ContractError, match="fitted on N = 100"):
        ppvae.elbo(model, q, d.x[:10], 10)
    with pytest.raises(ValueError, match="family must be one of"):
        ppvae.fit_local(model, d.x, "gaussian")
    with pytest.raises(ValueError, match="init must be 'prior' or a guide"):
        ppvae.fit_local(model, d.x, init="encoder")


def test_trace_holds_each_datapoints_window_means(ppca):
    """LocalFit.trace [W, N]: the window means whose mean over datapoints is ``history``."""
    d, model, _ = ppca
    x = d.x[:20]
    q = ppvae.fit_local(model, x, "diag", num_steps=250, window=100)  # windows 100, 100, 50
    fit = q.fit
    assert fit.window == 100 and fit.num_steps == 250
    assert fit.trace.shape == (3, 20) and fit.trace.dtype == x.dtype
    assert fit.trace.device == x.device
    assert fit.trace.mean(1).tolist() == pytest.approx(list(fit.history), rel=1e-12)
    assert torch.equal(fit.trace[-1], fit.elbo)  # the last window is the reported ELBO
    # the ELBO rises from the prior start: every datapoint's second window beats its first
    assert bool((fit.trace[1] > fit.trace[0]).all())
    frozen = ppvae.fit_local(model, x, "diag", num_steps=600, window=20, patience=2, tol=0.05,
                             freeze_converged=True).fit
    assert frozen.trace.shape == (len(frozen.history), 20) and frozen.num_converged > 0
    for n in frozen.converged.nonzero().flatten().tolist():  # held from its converging window
        w = int(frozen.steps_used[n]) // frozen.window - 1
        assert bool((frozen.trace[w:, n] == frozen.trace[w, n]).all())
    none = ppvae.fit_local(model, x, "diag", num_steps=0).fit
    assert none.trace.shape == (0, 20) and none.history == ()


def test_local_fit_repr_and_dataframe(ppca):
    d, model, _ = ppca
    q = ppvae.fit_local(model, d.x, "diag", num_steps=200, window=50)
    df = q.fit.to_dataframe()
    assert list(df.columns) == ["converged", "steps_used", "elbo"]
    assert df.index.name == "datapoint" and len(df) == 100
    assert df["converged"].dtype == bool and df["converged"].sum() == q.fit.num_converged
    assert df["steps_used"].tolist() == q.fit.steps_used.tolist()
    assert df["elbo"].tolist() == q.fit.elbo.tolist()
    text = repr(q.fit)
    assert "\n" not in text and f"{q.fit.num_converged}/100 converged" in text
