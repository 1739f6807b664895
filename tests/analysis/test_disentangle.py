"""Disentanglement metrics: exact mutual information, MIG and FactorVAE on codes whose answer
is known, latent codes of registry pairs, and a short end-to-end run on sprites.

Tolerances. The plug-in mutual information of two independent discrete variables with a and b
occupied values is, for large N, chi-square / (2N) with (a - 1)(b - 1) degrees of freedom
(Miller 1955): mean df / (2N), standard deviation sqrt(2 df) / (2N). So codes equal to the
factors have MIG_k >= 1 - (df + 4 sqrt(2 df)) / (2N H_k) but for a 4-sigma fluctuation of the
largest spurious term.
"""

import math

import numpy as np
import pyro
import pytest
import torch
from registry import REGISTRY

import ppvae
from ppvae.analysis.disentangle import (
    DisentanglementReport,
    disentanglement,
    factor_vae_score,
    latent_codes,
    mig,
    mutual_information,
)
from ppvae.core.contract import ContractError
from ppvae.core.trace import trace_fn
from ppvae.data import load_dataset, sprites

HADAMARD = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]],
                        dtype=torch.float64) / 2


@pytest.fixture(scope="module")
def factors() -> torch.Tensor:
    return sprites(6000, seed=0).factors  # [6000, 5]: (shape, scale, rotation, x, y)


def test_mutual_information_matches_the_closed_form():
    # bins=2 over the range [0, 3]: codes 0, 1 fall in bin 0 and 2, 3 in bin 1
    codes = torch.tensor([[0.0], [0.0], [1.0], [1.0], [2.0], [2.0], [3.0], [3.0]],
                         dtype=torch.float64)
    v = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    # joint p(b, v): (0, 0) 3/8, (0, 1) 1/8, (1, 1) 4/8; p(b) = (1/2, 1/2), p(v) = (3/8, 5/8)
    exact = 3 / 8 * math.log(2) + 1 / 8 * math.log(2 / 5) + 1 / 2 * math.log(8 / 5)
    mi = mutual_information(codes, v, bins=2)
    assert mi.shape == (1, 1) and mi.dtype == torch.float64
    assert abs(float(mi) - exact) < 1e-14
    # a factor that is a function of the bins carries H(v) = log 2
    assert abs(float(mutual_information(codes, v * 0 + (codes[:, 0] > 1), bins=2)) -
               math.log(2)) < 1e-14
    assert float(mutual_information(codes, torch.zeros(8, dtype=torch.long), bins=2)) == 0.0


def test_mutual_information_agrees_with_sklearn_on_histogram_bins():
    from sklearn.metrics import mutual_info_score

    g = np.random.default_rng(0)
    codes = g.normal(size=(500, 3))
    f = np.stack([g.integers(0, 4, 500), (codes[:, 1] > 0).astype(int)], axis=1)
    mi = mutual_information(codes, f, bins=20).numpy()
    for j in range(3):  # the discretization of Locatello et al. (2019): np.histogram edges
        b = np.digitize(codes[:, j], np.histogram(codes[:, j], 20)[1][:-1])
        for k in range(2):
            assert abs(mi[j, k] - mutual_info_score(f[:, k], b)) < 1e-12


def test_mig_of_the_true_factors_is_one(factors):
    g = torch.Generator().manual_seed(1)
    codes = factors.double() + 0.01 * torch.randn(factors.shape, generator=g, dtype=torch.float64)
    m = mig(codes, factors)
    n, nvals = len(factors), torch.tensor([3.0, 5.0, 8.0, 8.0, 8.0], dtype=torch.float64)
    df = (nvals.max() - 1) * (nvals - 1)  # the largest spurious term's degrees of freedom
    tol = (df + 4 * (2 * df).sqrt()) / (2 * n) / m.entropy  # see the module docstring
    assert ((1 - m.per_factor) <= tol).all(), (m.per_factor, tol)
    assert m.score > 0.99
    torch.testing.assert_close(m.entropy, nvals.log(), rtol=0, atol=0.01)  # near uniform
    assert torch.equal(m.mutual_information.argmax(0), torch.arange(5))
    df_ = m.to_dataframe()
    assert list(df_.columns[:2]) == ["mig", "entropy"] and len(df_) == 5


def test_mig_of_mixed_or_duplicated_codes(factors):
    ideal = mig(factors.double(), factors)
    # every code dimension mixes the four non-shape factors with weights of equal size: in the
    # population I(z_j; v_k) is the same for every j, so MIG is 0 up to sampling error
    # (about 0.01 nats at N = 6000, over entropies of 1.6 to 2.1 nats)
    v = factors[:, 1:].double()
    v = (v - v.mean(0)) / v.std(0)
    mixed = mig(v @ HADAMARD, factors[:, 1:])
    assert mixed.score < 0.05 and (mixed.per_factor < 0.05).all()
    # a factor carried by two identical dimensions has a gap of exactly 0
    dup = factors.double()[:, [0, 0, 1, 2, 3, 4]]
    assert float(mig(dup, factors).per_factor[0]) == 0.0
    # two factors merged into one dimension (x + y): both lose most of their gap
    f = factors.double()
    merged = mig(torch.stack([f[:, 0], f[:, 1], f[:, 2], f[:, 3] + f[:, 4]], 1), factors)
    assert merged.score < ideal.score - 0.2
    assert (merged.per_factor[3:] < 0.5).all() and (merged.per_factor[:3] > 0.99).all()


def test_mig_of_a_constant_factor_is_nan_and_left_out():
    codes = torch.arange(10.0)[:, None]
    f = torch.stack([torch.arange(10) % 2, torch.zeros(10, dtype=torch.long)], 1)
    m = mig(codes, f)
    assert torch.isnan(m.per_factor[1]) and m.score == float(m.per_factor[0])


def test_factor_vae_score(factors):
    ideal = factor_vae_score(factors.double(), factors, seed=3)
    # the dimension of the fixed factor has variance 0 in every batch: every vote is right
    assert ideal.score == 1.0 and ideal.train_accuracy == 1.0
    assert int(ideal.votes.sum()) == 800 and ideal.active.all()
    again = factor_vae_score(factors.double(), factors, seed=3)
    assert torch.equal(again.votes, ideal.votes)
    # with equal mixing no dimension stands out for any factor: chance is 1/4
    v = factors[:, 1:].double()
    mixed = factor_vae_score((v - v.mean(0)) / v.std(0) @ HADAMARD, factors[:, 1:], seed=3)
    assert mixed.score < 0.5
    # a collapsed (constant) dimension is left out, not voted for
    codes = torch.cat([factors.double(), torch.zeros(len(factors), 1, dtype=torch.float64)], 1)
    pruned = factor_vae_score(codes, factors, seed=3)
    assert not pruned.active[-1] and pruned.score == 1.0 and int(pruned.votes[-1].sum()) == 0
    assert "score=1" in repr(pruned) and len(pruned.to_dataframe()) == 6


def test_metric_inputs_are_checked():
    codes = torch.randn(10, 2)
    with pytest.raises(ValueError, match="factors must be integer indices"):
        mig(codes, torch.rand(10, 2))
    with pytest.raises(ValueError, match="codes has 10 rows but factors has 9"):
        mig(codes, torch.zeros(9, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="bins must be an integer >= 2"):
        mutual_information(codes, torch.zeros(10, dtype=torch.long), bins=1)
    with pytest.raises(ValueError, match="representation has collapsed"):
        factor_vae_score(torch.zeros(10, 2), torch.arange(10) % 2)
    with pytest.raises(ValueError, match="nothing to vote on"):
        factor_vae_score(codes, torch.zeros(10, dtype=torch.long))


def test_latent_codes_are_the_encoder_mean():
    e = REGISTRY["vae/mlp"]()
    codes = latent_codes(e.guide, e.x, model=e.model, chunk_size=5)  # three chunks
    assert codes.shape == (12, 2)
    torch.testing.assert_close(codes, e.guide.distribution(e.x).mean.detach())
    e = REGISTRY["autoencoder/delta"]()
    torch.testing.assert_close(latent_codes(e.guide, e.x), e.guide.encode(e.x).detach())


def test_latent_codes_chunk_the_model_arguments():
    e = REGISTRY["cvae/conditional"]()
    whole = latent_codes(e.guide, e.x, model=e.model, model_kwargs=e.kwargs)
    chunked = latent_codes(e.guide, e.x, model=e.model, model_kwargs=e.kwargs, chunk_size=5)
    assert whole.shape == (12, 2)
    torch.testing.assert_close(chunked, whole)


def test_latent_codes_of_a_flow_average_draws():
    e = REGISTRY["vae/flow"]()
    pyro.set_rng_seed(1)
    with torch.no_grad():
        draws = trace_fn(e.guide, e.x, particles=4000, particle_dim=-2).nodes["z"]["value"]
    ref, sd = draws.mean(0), draws.std(0)  # [12, 2] from 4000 draws
    pyro.set_rng_seed(2)
    codes = latent_codes(e.guide, e.x, model=e.model, num_samples=400)
    # independent means of 400 and 4000 draws: 4.5 standard errors of their difference
    tol = 4.5 * sd * math.sqrt(1 / 400 + 1 / 4000)
    assert codes.shape == (12, 2) and ((codes - ref).abs() < tol).all()


def test_latent_codes_name_the_site():
    e = REGISTRY["hierarchical/bottom_up"]()
    with pytest.raises(ContractError, match=r"2 continuous latent sites .*'z1', 'z2'.*site="):
        latent_codes(e.guide, e.x, model=e.model)
    with pytest.raises(ContractError, match=r"no latent site 'z3'.*'z1', 'z2'"):
        latent_codes(e.guide, e.x, site="z3")
    upper = latent_codes(e.guide, e.x, model=e.model, site="z2")  # averaged over z1 draws
    assert upper.shape == (12, 2) and upper.isfinite().all()
    e = REGISTRY["vqvae/vq"]()
    with pytest.raises(ContractError, match=r"discrete support \('z' \(discrete\)"):
        latent_codes(e.guide, e.x, model=e.model)
    with pytest.raises(ContractError, match="latent site 'z' has discrete support"):
        latent_codes(e.guide, e.x, model=e.model, site="z")


def test_a_vae_trained_briefly_on_sprites_gives_a_report():
    ds = load_dataset("sprites", num_data=1500, seed=0)
    model = ppvae.models.VAE(1024, 4, (64,), name="dis_vae")
    ppvae.fit(model, model.guide, ds.train, epochs=2, batch_size=100, lr=3e-3, quiet=True,
              device="cpu")
    assert ds.factors is not None and ds.factor_names is not None
    report = disentanglement(model, model.guide, ds.train, ds.factors[0], ds.factor_names)
    assert isinstance(report, DisentanglementReport) and report.latent == "z"
    for value in (report.mig, report.factor_vae_score, report.factor_vae_train_accuracy):
        assert 0.0 <= value <= 1.0
    assert report.mig_per_factor.isfinite().all()
    assert ((report.mig_per_factor >= 0) & (report.mig_per_factor <= 1)).all()
    assert report.mutual_information.shape == (4, 5) and report.best_latent.shape == (5,)
    assert report.num_data == 1200 and 0 <= report.num_active <= 4
    text = str(report)
    assert text.startswith("Disentanglement of 'z' on 1200 datapoints") and "rotation" in text
    assert "DisentanglementReport(" in repr(report)
    df = report.to_dataframe()
    assert list(df.index) == list(ds.factor_names) and "mi[3]" in df.columns
