"""Every way of breaking the model/guide contract gets a ContractError naming the site; a custom
model written here (not in models/) works with every engine entry point."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
from ppvae import ContractError

N, D, K = 6, 4, 2


def _z_then_x(x):
    """The good model's sites, to be called inside the data plate."""
    z = pyro.sample("z", dist.Normal(x.new_zeros(K), 1.0).to_event(1))
    pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand((*z.shape[:-1], D)), 1.0)
                .to_event(1), obs=x)


def good_model(x):
    with pyro.plate("data", x.shape[0]):
        _z_then_x(x)


def good_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(x[..., :K], 1.0).to_event(1))


@pytest.fixture
def x():
    return torch.randn(N, D)


def test_good_pair_passes(x):
    info = ppvae.check_pair(good_model, good_guide, x)
    assert info.num_data == N and info.latent == ("z",) and info.observed == ("x",)
    assert info.particle_dim == -2


def test_guide_latent_model_lacks(x):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., :K], 1.0).to_event(1))
            pyro.sample("extra", dist.Normal(x.new_zeros(K), 1.0).to_event(1))

    with pytest.raises(ContractError, match="guide samples latent site 'extra'"):
        ppvae.check_pair(good_model, guide, x)


def test_model_latent_guide_lacks(x):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(x.new_zeros(K), 1.0).to_event(1))
            _z_then_x(x)

    with pytest.raises(ContractError, match="model's latent site 'w' is not sampled"):
        ppvae.check_pair(model, good_guide, x)


def test_site_outside_data_plate(x):
    def model(x):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], K), 1.0).to_event(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(x.new_zeros(D), 1.0).to_event(1), obs=x)
        return z

    def guide(x):
        pyro.sample("z", dist.Normal(x[..., :K], 1.0).to_event(2))

    with pytest.raises(ContractError, match=r"site 'z' is outside pyro\.plate"):
        ppvae.check_pair(model, guide, x)


def test_plate_size_not_n(x):
    def model(x):
        with pyro.plate("data", 10):
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([10, K]).to_event(1))
        with pyro.plate("obs", x.shape[0]):
            pyro.sample("x", dist.Normal(x.new_zeros(D), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", 10):
            pyro.sample("z", dist.Normal(0.0, 1.0).expand([10, K]).to_event(1))

    with pytest.raises(ContractError, match=r"'z': plate 'data' has size 10 but x has N"):
        ppvae.check_pair(model, guide, x)


def test_no_observed_site(x):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(K), 1.0).to_event(1))

    with pytest.raises(ContractError, match="no observed site"):
        ppvae.check_pair(model, good_guide, x)


def test_missing_to_event_names_site():
    x = torch.randn(N, N)  # K == N: Pyro's own plate check cannot see the mistake

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], N), 1.0))  # no to_event
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 1.0))

    with pytest.raises(ContractError, match=r"site 'z' has batch shape \(6, 6\).*to_event\(1\)"):
        ppvae.check_pair(model, guide, x)


def test_forgotten_to_event_is_named(x):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., :K], 1.0))  # batch [N, K] vs plate N: Pyro raises

    with pytest.raises(ContractError, match=r"guide latent site 'z': its distribution has batch "
                                            rf"shape \({x.shape[0]}, {K}\).*Normal\(\.\.\.\)"
                                            r"\.to_event\(1\)"):
        ppvae.check_pair(good_model, guide, x)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(x.shape), 1.0), obs=x)

    with pytest.raises(ContractError, match=r"model observed site 'x'.*to_event\(1\)"):
        ppvae.check_pair(model, good_guide, x)


def test_other_pyro_errors_are_wrapped_with_role(x):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., :K] @ x.new_ones(K + 1, K), 1.0).to_event(1))

    with pytest.raises(ContractError, match="running the guide on x of shape"):
        ppvae.check_pair(good_model, guide, x)


def test_one_datapoint_given_as_a_vector_is_refused(x):
    with pytest.raises(ContractError, match=r"model observed site 'x': the observed value has "
                                            rf"shape \({D},\).*x must be \[N, \.\.\.\]"):
        ppvae.check_pair(good_model, good_guide, x[0])


def test_non_finite_log_density(x):
    x = x.clone()
    x[3, D - 1] = float("inf")  # unread by the guide; log density -inf
    with pytest.raises(ContractError, match=r"model site 'x' has a non-finite log density at "
                                            r"batch index \[\(3,\)\]"):
        ppvae.check_pair(good_model, good_guide, x)


def test_value_outside_support_names_site(x):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(K), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(probs=x.new_full((D,), 0.5)).to_event(1), obs=x)

    with pytest.raises(ContractError, match="model site 'x'"):
        ppvae.check_pair(model, good_guide, x)  # x is not binary


def test_event_shape_mismatch(x):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[..., :K], 1.0).to_event(1))
            pyro.sample("extra", dist.Normal(x, 1.0).to_event(1))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("extra", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            _z_then_x(x)

    with pytest.raises(ContractError, match="'extra' has event shape"):
        ppvae.check_pair(model, guide, x)


def test_data_plate_wrong_dim(x):
    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("x", dist.Normal(x.new_zeros(x.shape[0], 1, D), 1.0).to_event(1),
                        obs=x.unsqueeze(1))

    def guide(x):
        pass

    with pytest.raises(ContractError, match="dim=-2"):
        ppvae.check_pair(model, guide, x)


def test_x_must_be_a_tensor():
    with pytest.raises(ContractError, match="x must be a tensor"):
        ppvae.check_pair(good_model, good_guide, [[1.0, 2.0]])


def test_x_without_rows_and_every_entry_point_checks_x_first(x):
    with pytest.raises(ContractError, match=r"x has no rows \(shape \(0, 4\)\)"):
        ppvae.check_pair(good_model, good_guide, x[:0])
    for call in (lambda: ppvae.gaps(good_model, good_guide, x[:0], local_steps=2),
                 lambda: ppvae.fit_local(good_model, x[:0], "diag", num_steps=2)):
        with pytest.raises(ContractError, match="x has no rows"):
            call()


def test_dtype_mismatch_names_the_role_and_both_dtypes(x):
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(K, D)

        def forward(self, x):
            pyro.module("dtype_decoder", self)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(K), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(self.lin(z), 1.0).to_event(1), obs=x)

    with pytest.raises(ContractError, match=r"running the model on x of shape \(6, 4\) failed "
                       r"\(x is torch.float64 but the model's parameters are torch.float32"):
        ppvae.check_pair(Decoder(), good_guide, x.double())


def test_subsampled_data_plate_is_allowed(x):
    def model(x):
        with pyro.plate("data", 1000, subsample=torch.arange(x.shape[0])):
            _z_then_x(x)

    info = ppvae.check_pair(model, good_guide, x)
    assert info.num_data == N
    # per-datapoint weights are unscaled by the plate's N_total / batch factor
    lw_sub = ppvae.log_weights(model, good_guide, x, 3)
    pyro.set_rng_seed(1)
    a = ppvae.log_weights(good_model, good_guide, x, 3)
    pyro.set_rng_seed(1)
    b = ppvae.log_weights(model, good_guide, x, 3)
    assert lw_sub.shape == (3, N)
    assert torch.allclose(a, b)


# A user-defined two-latent conditional model with networks, written here and not in models/.
class TwoLayer(nn.Module):
    def __init__(self, d=D, k1=3, k2=2, c=3):
        super().__init__()
        self.dec2 = nn.Linear(k2 + c, 2 * k1)
        self.dec1 = nn.Linear(k1, d)
        self.enc1 = nn.Linear(d + c, 2 * k1)
        self.enc2 = nn.Linear(k1, 2 * k2)
        self.k1, self.k2, self.c = k1, k2, c

    def model(self, x, labels):
        pyro.module("two_layer", self)
        onehot = nn.functional.one_hot(labels, self.c).to(x.dtype)  # [N, C]
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.k2), 1.0).to_event(1))
            h = torch.cat([z2, onehot.expand(z2.shape[:-1] + onehot.shape[-1:])], -1)
            loc, raw = self.dec2(h).chunk(2, -1)
            z1 = pyro.sample("z1", dist.Normal(loc, nn.functional.softplus(raw) + 0.1)
                             .to_event(1))
            pyro.sample("x", dist.Normal(self.dec1(z1), 0.5).to_event(1), obs=x)

    def guide(self, x, labels):
        pyro.module("two_layer", self)
        onehot = nn.functional.one_hot(labels, self.c).to(x.dtype)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.enc1(torch.cat([x, onehot], -1)).chunk(2, -1)
            z1 = pyro.sample("z1", dist.Normal(loc, nn.functional.softplus(raw) + 0.1)
                             .to_event(1))
            loc2, raw2 = self.enc2(z1).chunk(2, -1)
            pyro.sample("z2", dist.Normal(loc2, nn.functional.softplus(raw2) + 0.1).to_event(1))


def test_custom_conditional_two_latent_model_works_everywhere(x):
    net = TwoLayer()
    labels = torch.arange(N) % 3
    info = ppvae.check_pair(net.model, net.guide, x, model_kwargs={"labels": labels})
    assert set(info.latent) == {"z1", "z2"}
    lw = ppvae.log_weights(net.model, net.guide, x, 40, chunk_size=7,
                           model_kwargs={"labels": labels})
    assert lw.shape == (40, N) and torch.isfinite(lw).all()
    e = ppvae.elbo(net.model, net.guide, x, 400, model_kwargs={"labels": labels})
    iw = ppvae.iwae(net.model, net.guide, x, 50, num_estimates=8, model_kwargs={"labels": labels})
    assert e.per_datapoint.shape == iw.per_datapoint.shape == (N,)
    se = (e.mean_stderr**2 + iw.mean_stderr**2) ** 0.5
    assert iw.mean - e.mean > -4 * se
    # gradients flow to the networks through reparameterized samples
    ppvae.log_weights(net.model, net.guide, x, 4, model_kwargs={"labels": labels}).mean().backward()
    assert net.enc2.weight.grad is not None and net.enc2.weight.grad.abs().sum() > 0
    assert net.dec1.weight.grad.abs().sum() > 0


def test_two_modules_sharing_parameter_store_names_are_named(x):
    from pyro.nn import PyroModule

    class Net(PyroModule):  # both instances unnamed: "fc.weight", "fc.bias" in both
        def __init__(self, n_in, n_out):
            super().__init__()
            self.fc = PyroModule[torch.nn.Linear](n_in, n_out)

    enc, dec = Net(D, K), Net(K, D)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(K), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec.fc(z), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(enc.fc(x), 1.0).to_event(1))

    with pytest.raises(ContractError, match=r"two different modules register the "
                                            r"parameter-store name 'fc\.weight'"):
        ppvae.check_pair(model, guide, x)


def test_site_listings_show_sample_sites_only(x):
    def guide(x):
        pyro.param("scale", torch.ones(()))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(x[..., :K], 1.0).to_event(1))

    with pytest.raises(ContractError, match=r"model's sample sites: \['x', 'z'\]\)") as e:
        ppvae.check_pair(good_model, guide, x)
    assert "_RETURN" not in str(e.value) and "scale" not in str(e.value)
