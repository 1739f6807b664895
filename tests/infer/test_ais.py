"""AIS and BDMC: against exact PPCA log p(x), and on a small VAE trained on sklearn's digits.

Tolerances come from Monte Carlo standard errors (AIS's from its chains split in halves; IWAE's
own). Every test passes explicit small settings: the defaults (2000 steps x 256 chains) are
checked against quadrature in ``test_ais_defaults.py``.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from stats import z_threshold
from torch import nn

import ppvae
import ppvae.infer.ais
from ppvae.analysis.gaps import LOG_PX
from ppvae.guides.linear import AmortizedLinearGaussian
from ppvae.infer.ais import AISResult, ais, schedule
from ppvae.infer.bdmc import bdmc
from ppvae.models.ppca import PPCA


def _ppca(n=10, d=10, k=3):
    data = ppvae.data.ppca_dataset(n, d, k, 0.5, seed=2)
    model = PPCA(d, k, W=data.W, b=data.b, sigma=data.sigma, fixed=True)
    exact = ppvae.ppca_log_marginal(data.W, data.b, data.sigma, data.x)
    return data, model, exact


def test_schedule_is_monotone_from_zero_to_one():
    for kind in ("sigmoid", "linear"):
        b = schedule(50, kind)
        assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    with pytest.raises(ValueError, match="sigmoid"):
        schedule(5, "cosine")


def test_ais_matches_exact_ppca_log_marginal(float64):
    data, model, exact = _ppca()
    res = ais(model, data.x, num_steps=200, num_chains=16, num_leapfrog=5)
    assert isinstance(res, AISResult) and res.per_datapoint.shape == (10,)
    assert res.samples["z"].shape == (16, 10, 3) and res.log_weights.shape == (16, 10)
    z = (res.per_datapoint - exact) / res.stderr
    assert z.abs().max() < z_threshold(10), z
    assert abs(res.mean - float(exact.mean())) < z_threshold(1) * res.mean_stderr
    assert 0.4 < float(res.accept_rate.mean()) < 0.95


def test_ais_from_a_guide_and_iwae_match_exact(float64):
    data, model, exact = _ppca()
    guide = AmortizedLinearGaussian.from_ppca(data.W, data.b, data.sigma, "diag")
    # 200 steps: at 50 the delta-method s.e. of 16 chains undercovers (issue 16)
    res = ais(model, data.x, guide=guide, num_steps=200, num_chains=16, num_leapfrog=5)
    assert ((res.per_datapoint - exact) / res.stderr).abs().max() < z_threshold(10)
    iw = ppvae.iwae(model, guide, data.x, k=2000)
    assert ((iw.per_datapoint - exact) / iw.stderr).abs().max() < z_threshold(10)


def test_bdmc_sandwiches_exact_ppca_log_marginal(float64):
    data, model, exact = _ppca()
    res = bdmc(model, data.x, z=data.z, num_steps=100, num_chains=16, num_leapfrog=5)
    lo, up = res.lower, res.upper
    one_sided = z_threshold(1, two_sided=False)  # each bound is checked on its own side
    assert lo.mean - float(exact.mean()) < one_sided * lo.mean_stderr
    assert up.mean - float(exact.mean()) > -one_sided * up.mean_stderr
    assert float(((lo.per_datapoint - exact) / lo.stderr).max()) < z_threshold(10, two_sided=False)
    assert float(((up.per_datapoint - exact) / up.stderr).min()) > -z_threshold(10, two_sided=False)
    assert res.gap.shape == (10,)


def test_bdmc_simulates_its_own_data(float64):
    data, model, _ = _ppca(n=6)
    res = bdmc(model, data.x, num_steps=20, num_chains=4, num_leapfrog=3)
    assert not torch.equal(res.x, data.x) and res.z["z"].shape == (6, 3)
    exact = ppvae.ppca_log_marginal(data.W, data.b, data.sigma, res.x)
    assert float(((res.lower.per_datapoint - exact) / res.lower.stderr).max()) < z_threshold(
        6, two_sided=False)


# --- a small VAE trained on sklearn's digits ---------------------------------------------------

class _Decoder(nn.Module):
    def __init__(self, k=4, d=64, h=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(k, h), nn.Tanh(), nn.Linear(h, d))


class _Encoder(nn.Module):
    def __init__(self, k=4, d=64, h=64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, 2 * k))


def _vae_model(x, decoder, encoder):
    pyro.module("test_ais_decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(4), 1.0).to_event(1))  # [..., N, 4]
        pyro.sample("x", dist.Bernoulli(logits=decoder.net(z)).to_event(1), obs=x)


def _vae_guide(x, decoder, encoder):
    pyro.module("test_ais_encoder", encoder)
    loc, raw = encoder.net(x).chunk(2, -1)  # [N, 4] each
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


@pytest.fixture(scope="module")
def digits_vae():
    from sklearn.datasets import load_digits

    pyro.set_rng_seed(0)
    x = torch.tensor(load_digits().data >= 8, dtype=torch.float32)  # [1797, 64]
    dec, enc = _Decoder(), _Encoder()
    svi = SVI(_vae_model, _vae_guide, Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(400):
        svi.step(x, dec, enc)
    return x, dec, enc


def test_ais_beats_iwae_on_a_digits_vae(digits_vae):
    x, dec, enc = digits_vae
    xs = x[:20]
    res = ais(_vae_model, xs, num_steps=200, num_chains=8, num_leapfrog=5,
              model_kwargs={"decoder": dec, "encoder": enc})
    iw = ppvae.iwae(_vae_model, _vae_guide, xs, k=5000, model_kwargs={"decoder": dec,
                                                                      "encoder": enc})
    z = (res.per_datapoint - iw.per_datapoint) / (res.stderr**2 + iw.stderr**2).sqrt()
    assert float((z > -3).float().mean()) >= 0.8, z  # AIS >= IWAE_5000 within error, mostly
    assert res.mean > iw.mean - 3 * (res.mean_stderr + iw.mean_stderr)


def test_bdmc_sandwich_narrows_with_longer_schedules(digits_vae):
    x, dec, enc = digits_vae
    gaps = []
    for steps in (10, 50, 200):
        pyro.set_rng_seed(1)
        res = bdmc(_vae_model, x[:10], num_steps=steps, num_chains=8, num_leapfrog=5,
                   model_kwargs={"decoder": dec, "encoder": enc})
        gaps.append(res.mean_gap)
    print("BDMC mean gaps (10, 50, 200 steps):", gaps)
    assert gaps[0] > gaps[1] > gaps[2] > -0.1, gaps


def test_ais_log_px_is_the_gap_report_estimator(float64):
    data, model, exact = _ppca(n=4)
    est, se, label = ppvae.infer.ais.ais_log_px(model, data.x, None, {}, num_steps=100,
                                                num_chains=8,
                                                num_leapfrog=5)
    assert label.startswith("AIS (100 steps, 8 chains")
    assert LOG_PX["ais"] is ppvae.infer.ais.ais_log_px  # what ppvae.gaps(log_px="ais") runs
    assert ((est - exact) / se).abs().max() < z_threshold(4)
    with pytest.raises(ValueError, match="init"):
        ppvae.infer.ais.ais_log_px(model, data.x, None, {}, init="posterior")


def test_ais_and_bdmc_records_print_one_line_and_give_per_datapoint_frames(float64):
    data, model, _ = _ppca(n=6)
    res = ais(model, data.x, num_steps=20, num_chains=8)
    df = res.to_dataframe()
    assert list(df.columns) == ["per_datapoint", "stderr", "accept_rate", "step_size",
                                "chain_ess"]
    assert df.index.name == "datapoint" and len(df) == 6
    assert df["per_datapoint"].tolist() == res.per_datapoint.tolist()
    assert df["accept_rate"].to_numpy() == pytest.approx(res.accept_rate.mean(0).numpy())
    w = (res.log_weights - res.log_weights.max(0).values).exp()  # [C, N]
    ess = (w.sum(0) ** 2 / (w**2).sum(0)).numpy()
    assert df["chain_ess"].to_numpy() == pytest.approx(ess)
    assert ((ess >= 1) & (ess <= 8)).all()

    sandwich = bdmc(model, data.x, num_steps=20, num_chains=8)
    bf = sandwich.to_dataframe()
    assert list(bf.columns) == ["lower", "lower_stderr", "upper", "upper_stderr", "gap",
                                "gap_stderr"]
    assert bf["gap"].to_numpy() == pytest.approx((bf["upper"] - bf["lower"]).to_numpy())
    assert sandwich.lower.to_dataframe()["step_size"].notna().all()  # BDMC's [N] step sizes

    cert = ppvae.infer.bdmc.certify(res, sandwich, max_gap=1e9).certificate
    assert repr(cert).startswith("BDMCCertificate(gap ") and "certified below" in repr(cert)
    row = cert.to_dataframe()
    assert row.shape == (1, 6) and bool(row["certified"][0])
    assert row["upper"][0] == pytest.approx(cert.gap + 2 * cert.gap_stderr)

    g = torch.Generator().manual_seed(0)
    c, n = 16, 1000
    big = AISResult(torch.randn(n, generator=g), torch.rand(n, generator=g),
                    torch.randn(c, n, generator=g), torch.rand(c, n, generator=g),
                    torch.rand(c, n, generator=g), {"z": torch.randn(c, n, 2, generator=g)}, 100)
    for text in (repr(big), repr(ppvae.infer.bdmc.BDMCResult(big, big, torch.zeros(n, 3), {}))):
        assert "\n" not in text and len(text) < 250 and "1000 datapoints" in text, text
    assert big.to_dataframe().shape == (n, 5)
