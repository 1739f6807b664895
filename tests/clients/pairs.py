"""Client code in the styles Pyro users write, used as they wrote it (not adapted to ppvae).

Each builder returns a :class:`Client`: a model and guide written the way Pyro's examples and
tutorials write them (plain functions with ``pyro.module`` or ``PyroModule`` classes, plates
named after what they index, masks, enumerated discrete latents), small data made here, and the
model arguments the pair takes. The suite in this folder runs every ppvae tool on each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate
from pyro.nn import PyroModule
from torch import nn

__all__ = ["CLIENTS", "Client"]


@dataclass
class Client:
    """A user's (model, guide) pair with data and model arguments."""

    name: str
    model: Callable
    guide: Callable
    x: torch.Tensor
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    modules: tuple[nn.Module, ...] = ()
    truth: dict[str, Any] = field(default_factory=dict)  # the generating constants, for checks


# --- a CVAE that observes only the unmasked pixels (Pyro's examples/cvae style) -------------
class _CVAE(nn.Module):
    def __init__(self, d: int = 16, k: int = 2, h: int = 32):
        super().__init__()
        self.k = k
        self.prior_net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * k))
        self.gen_net = nn.Sequential(nn.Linear(k + d, h), nn.ReLU(), nn.Linear(h, d))
        self.rec_net = nn.Sequential(nn.Linear(2 * d, h), nn.ReLU(), nn.Linear(h, 2 * k))

    def model(self, xs, ys):
        pyro.module("cvae", self)
        with pyro.plate("data", xs.shape[0]):
            loc, raw = self.prior_net(xs).chunk(2, -1)
            z = pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))
            logits = self.gen_net(torch.cat([z, xs.expand(z.shape[:-1] + xs.shape[-1:])], -1))
            mask = xs < 0  # the quadrants the network must fill in
            pyro.sample("y", dist.Bernoulli(logits=logits[..., mask.any(0)]).to_event(1),
                        obs=ys[:, mask.any(0)])

    def guide(self, xs, ys):
        pyro.module("cvae", self)
        with pyro.plate("data", xs.shape[0]):
            loc, raw = self.rec_net(torch.cat([xs, ys], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def cvae() -> Client:
    g = torch.Generator().manual_seed(0)
    ys = torch.bernoulli(torch.full((24, 16), 0.4), generator=g)
    xs = ys.clone()
    xs[:, 8:] = -1.0  # the hidden half, as the Pyro example masks quadrants with -1
    net = _CVAE()
    return Client("cvae_masked", net.model, net.guide, xs, {"ys": ys}, (net,))


# --- a factor-analysis model with heteroscedastic noise, guide by pyro.module -----------------
def factor_analysis() -> Client:
    d, k = 6, 2
    g = torch.Generator().manual_seed(1)
    W = torch.randn(d, k, generator=g)
    psi = 0.3 + torch.rand(d, generator=g)
    z = torch.randn(40, k, generator=g)
    x = z @ W.T + psi.sqrt() * torch.randn(40, d, generator=g)
    enc = nn.Linear(d, 2 * k)

    def model(x):
        with pyro.plate("obs", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(k), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T, psi.sqrt()).to_event(1), obs=x)

    def guide(x):
        pyro.module("fa_encoder", enc)
        with pyro.plate("obs", x.shape[0]):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))

    return Client("factor_analysis", model, guide, x, {}, (enc,), {"W": W, "psi": psi})


# --- Gamma-Poisson: a constrained latent rate per datapoint ----------------------------------
def gamma_poisson() -> Client:
    g = torch.Generator().manual_seed(2)
    rate = torch.distributions.Gamma(2.0, 0.5).sample((30,))
    x = torch.poisson(rate.unsqueeze(-1).expand(30, 3), generator=g)

    class Guide(PyroModule):
        def __init__(self):
            super().__init__("gp_guide")
            self.net = nn.Linear(3, 2)

        def forward(self, x):
            with pyro.plate("counts", x.shape[0]):
                a, b = nn.functional.softplus(self.net(x.log1p())).unbind(-1)
                pyro.sample("lam", dist.Gamma(a + 1.0, b + 0.1))

    def model(x):
        with pyro.plate("counts", x.shape[0]):
            lam = pyro.sample("lam", dist.Gamma(2.0, 0.5))
            pyro.sample("x", dist.Poisson(lam.unsqueeze(-1)).expand((*lam.shape, 3))
                        .to_event(1), obs=x)

    guide = Guide()
    return Client("gamma_poisson", model, guide, x, {}, (guide,), {"a": 2.0, "b": 0.5})


# --- a topic model in the ProdLDA style: plate "documents", BatchNorm in the encoder ----------
class _ProdLDA(nn.Module):
    def __init__(self, vocab: int = 20, topics: int = 3, hidden: int = 16):
        super().__init__()
        self.topics = topics
        self.enc = nn.Sequential(nn.Linear(vocab, hidden), nn.Softplus(),
                                 nn.Linear(hidden, 2 * topics))
        self.bn = nn.BatchNorm1d(2 * topics)
        self.beta = nn.Linear(topics, vocab, bias=False)
        self.beta_bn = nn.BatchNorm1d(vocab, affine=False)

    def model(self, docs):
        pyro.module("decoder", self.beta)
        with pyro.plate("documents", docs.shape[0]):
            theta = pyro.sample("logtheta", dist.Normal(docs.new_zeros(self.topics), 1.0)
                                .to_event(1))
            probs = torch.softmax(self.beta(torch.softmax(theta, -1)), -1)
            pyro.sample("doc", dist.Multinomial(probs=probs, validate_args=False), obs=docs)

    def guide(self, docs):
        pyro.module("encoder", self.enc)
        pyro.module("encoder_bn", self.bn)
        with pyro.plate("documents", docs.shape[0]):
            loc, raw = self.bn(self.enc(docs)).chunk(2, -1)
            pyro.sample("logtheta", dist.Normal(loc, (0.5 * raw).exp()).to_event(1))


def prodlda() -> Client:
    g = torch.Generator().manual_seed(3)
    docs = torch.distributions.Multinomial(30, torch.rand(20, generator=g)).sample((32,))
    net = _ProdLDA()
    return Client("prodlda", net.model, net.guide, docs, {}, (net,))


# --- a two-level hierarchy z1 -> z2 -> x ------------------------------------------------------
def hierarchical() -> Client:
    d = 8
    g = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((30, d), 0.3), generator=g)
    dec2, dec1 = nn.Linear(2, 4), nn.Linear(4, d)
    enc = nn.Linear(d, 8)
    enc2 = nn.Linear(4, 4)

    def model(x):
        pyro.module("h_dec", nn.ModuleList([dec2, dec1]))
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z2 = pyro.sample("z2", dist.Normal(dec2(z1), 0.5).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec1(z2)).to_event(1), obs=x)

    def guide(x):
        pyro.module("h_enc", nn.ModuleList([enc, enc2]))
        with pyro.plate("data", x.shape[0]):
            h = enc(x)
            z2 = pyro.sample("z2", dist.Normal(h[..., :4], nn.functional.softplus(h[..., 4:]))
                             .to_event(1))
            loc, raw = enc2(z2).chunk(2, -1)
            pyro.sample("z1", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))

    return Client("hierarchical", model, guide, x, {}, (dec2, dec1, enc, enc2))


# --- Bayesian logistic regression: global weights next to a local random intercept ----------
def bayesian_logistic() -> Client:
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(40, 3, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5])
    u = 0.8 * torch.randn(40, generator=g)
    y = torch.bernoulli(torch.sigmoid(feats @ w + u), generator=g).unsqueeze(-1)
    enc = nn.Linear(4, 2)

    def model(y, feats):
        coef = pyro.sample("coef", dist.Normal(feats.new_zeros(3), 1.0).to_event(1))
        with pyro.plate("subjects", y.shape[0]):
            u = pyro.sample("u", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Bernoulli(logits=(feats @ coef.unsqueeze(-1)).squeeze(-1)
                                            .add(u).unsqueeze(-1)).to_event(1), obs=y)

    def guide(y, feats):
        loc = pyro.param("coef_loc", feats.new_zeros(3))
        scale = pyro.param("coef_scale", feats.new_full((3,), 0.5),
                           constraint=dist.constraints.positive)
        pyro.sample("coef", dist.Normal(loc, scale).to_event(1))
        pyro.module("intercept_enc", enc)
        with pyro.plate("subjects", y.shape[0]):
            loc_u, raw = enc(torch.cat([y, feats], -1)).unbind(-1)
            pyro.sample("u", dist.Normal(loc_u, nn.functional.softplus(raw) + 1e-3))

    return Client("bayesian_logistic", model, guide, y, {"feats": feats}, (enc,),
                  {"globals": ("coef",)})


# --- a CVAE observing the hidden pixels with boolean-mask indexing (Pyro's examples/cvae) -----
class _MaskedCVAE(nn.Module):
    def __init__(self, d: int = 16, k: int = 2, h: int = 32):
        super().__init__()
        self.k = k
        self.prior_net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * k))
        self.gen_net = nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Linear(h, d))
        self.rec_net = nn.Sequential(nn.Linear(2 * d, h), nn.ReLU(), nn.Linear(h, 2 * k))

    def model(self, xs, ys=None):
        pyro.module("masked_cvae", self)
        b = xs.shape[0]
        with pyro.plate("data", b):
            loc, raw = self.prior_net(xs).chunk(2, -1)
            zs = pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))
            probs = torch.sigmoid(self.gen_net(zs))
            mask = xs == -1  # [B, D]: index the hidden pixels, as the Pyro example does
            pyro.sample("y", dist.Bernoulli(probs[mask].view(b, -1)).to_event(1),
                        obs=None if ys is None else ys[mask].view(b, -1))

    def guide(self, xs, ys=None):
        pyro.module("masked_cvae", self)
        with pyro.plate("data", xs.shape[0]):
            loc, raw = self.rec_net(torch.cat([xs, ys], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw)).to_event(1))


def cvae_boolean_mask() -> Client:
    g = torch.Generator().manual_seed(6)
    ys = torch.bernoulli(torch.full((24, 16), 0.4), generator=g)
    xs = ys.clone()
    xs[:, 8:] = -1.0
    net = _MaskedCVAE()
    return Client("cvae_boolean_mask", net.model, net.guide, xs, {"ys": ys}, (net,))


# --- semi-supervised M2 (Kingma et al. 2014): the guide enumerates the unobserved label ------
class _M2(nn.Module):
    def __init__(self, d: int = 12, k: int = 2, classes: int = 3, h: int = 16):
        super().__init__()
        self.k, self.classes = k, classes
        self.decoder = nn.Sequential(nn.Linear(k + classes, h), nn.Tanh(), nn.Linear(h, d))
        self.encoder_y = nn.Linear(d, classes)
        self.encoder_z = nn.Sequential(nn.Linear(d + classes, h), nn.Tanh(), nn.Linear(h, 2 * k))

    @staticmethod
    def _joined(a, b):
        shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
        return torch.cat([a.expand(shape + a.shape[-1:]), b.expand(shape + b.shape[-1:])], -1)

    def model(self, xs, ys=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", xs.shape[0]):
            zs = pyro.sample("z", dist.Normal(xs.new_zeros(self.k), 1.0).to_event(1))
            prior = xs.new_ones(self.classes) / self.classes
            ys = pyro.sample("y", dist.OneHotCategorical(prior), obs=ys)
            logits = self.decoder(self._joined(zs, ys))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=xs)

    @config_enumerate
    def guide(self, xs, ys=None):
        pyro.module("ss_vae", self)
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(logits=self.encoder_y(xs)))
            loc, raw = self.encoder_z(self._joined(xs, ys)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


def m2() -> Client:
    g = torch.Generator().manual_seed(7)
    x = torch.bernoulli(torch.full((30, 12), 0.35), generator=g)
    net = _M2()
    return Client("m2", net.model, net.guide, x, {}, (net,))


# --- a Gaussian-mixture prior over z, the assignment enumerated in the model -----------------
def gmm_prior() -> Client:
    d, k, c = 5, 2, 3
    g = torch.Generator().manual_seed(8)
    weights = torch.tensor([0.5, 0.3, 0.2])
    means = 2.0 * torch.randn(c, k, generator=g)
    W = torch.randn(d, k, generator=g)
    psi = 0.2 + torch.rand(d, generator=g)
    assign = torch.multinomial(weights, 40, replacement=True, generator=g)
    z = means[assign] + torch.randn(40, k, generator=g)
    x = z @ W.T + psi.sqrt() * torch.randn(40, d, generator=g)
    enc = nn.Linear(d, 2 * k)

    @config_enumerate
    def model(x):
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Categorical(weights.to(x)))
            z = pyro.sample("z", dist.Normal(means.to(x)[a], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.to(x).T, psi.to(x).sqrt()).to_event(1), obs=x)

    def guide(x):
        pyro.module("gmm_encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, raw = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 0.1).to_event(1))

    return Client("gmm_prior", model, guide, x, {}, (enc,),
                  {"weights": weights, "means": means, "W": W, "psi": psi})


CLIENTS: dict[str, Callable[[], Client]] = {
    "cvae_masked": cvae,
    "factor_analysis": factor_analysis,
    "gamma_poisson": gamma_poisson,
    "prodlda": prodlda,
    "hierarchical": hierarchical,
    "bayesian_logistic": bayesian_logistic,
    "cvae_boolean_mask": cvae_boolean_mask,
    "m2": m2,
    "gmm_prior": gmm_prior,
}
