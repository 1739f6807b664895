"""The registry of (model, guide) pairs that ``tests/test_registry.py`` checks one by one.

Each entry is a name and a factory building a small model, a guide and a fixed data batch
(FlowJAX's registry-driven bijection tests are the pattern). Adding a model to ppvae is adding
a line here: the contract test then checks that the pair keeps the ppvae contract, samples of
the right shapes, one SVI step lowers the loss on the fixed batch, and ELBO <= IWAE_k <= IWAE_k'.

A factory returns an :class:`Entry`. ``model``/``guide`` are the contract-keeping pair that the
engine analyses; ``train_model``/``train_guide`` (when set) are what SVI trains, for models with
global latents that are analysed conditionally (the Bayesian VAE, see ``ppvae/globals.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ppvae import guides, models

__all__ = ["REGISTRY", "Entry", "binary_batch"]

N, SIDE, D, C = 12, 8, 64, 10  # datapoints, image side, pixels, classes


class Entry(NamedTuple):
    model: Callable
    guide: Callable
    x: torch.Tensor  # [N, ...] the fixed batch
    kwargs: dict  # extra keyword arguments of model and guide (labels)
    latent_shapes: dict[str, tuple[int, ...]]  # event shape of every latent site
    train_model: Callable | None = None  # what SVI trains (default: model)
    train_guide: Callable | None = None  # (default: guide)
    deterministic_guide: bool = False  # point-mass guide: ELBO == IWAE_k exactly
    samples_prior: bool = True  # the model's prior can be sampled (not an improper prior)
    pyro_elbo: bool = False  # train with Pyro's Trace_ELBO: the guide adds pyro.factor losses


def binary_batch(n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(d, generator=g) * 0.8 + 0.1  # [D] pixel frequencies
    return torch.bernoulli(probs.expand(n, d), generator=g)  # [N, D]


def labels(n: int = N, seed: int = 1, missing: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    if missing:
        y[torch.rand(n, generator=g) < missing] = -1
    return y


def _ppca() -> Entry:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=g)
    model = models.PPCA(6, 2, name="reg_ppca")
    return Entry(model, guides.AmortizedLinearGaussian(6, 2, "full", name="reg_ppca_q"), x, {},
                 {"z": (2,)})


def _vae(guide_cls) -> Callable[[], Entry]:
    def make() -> Entry:
        from ppvae.models.vae import VAE
        model = VAE(D, 2, (32,), name="reg_vae")
        return Entry(model, guide_cls(D, 2, (32,), name="reg_vae_q"), binary_batch(), {},
                     {"z": (2,)})
    return make


def _conv() -> Entry:
    return Entry(models.ConvVAE(SIDE, 2, 4, name="reg_conv"),
                 guides.ConvEncoder(SIDE, 2, 4, name="reg_conv_q"), binary_batch(), {},
                 {"z": (2,)})


def _cvae(learned_prior: bool) -> Callable[[], Entry]:
    def make() -> Entry:
        model = models.CVAE(D, C, 2, (32,), learned_prior=learned_prior, name="reg_cvae")
        guide = guides.ConditionalEncoder(D, C, 2, (32,), name="reg_cvae_q")
        return Entry(model, guide, binary_batch(), {"y": labels()}, {"z": (2,)})
    return make


def _hierarchical(ladder: bool) -> Callable[[], Entry]:
    def make() -> Entry:
        model = models.HierarchicalVAE(D, (4, 2), (32,), (16,), name="reg_hvae")
        guide = (guides.LadderGuide(model, (32, 16), name="reg_hvae_q") if ladder else
                 guides.BottomUpGuide(D, (4, 2), (32,), (16,), name="reg_hvae_q"))
        return Entry(model, guide, binary_batch(), {}, {"z1": (4,), "z2": (2,)})
    return make


def _autoencoder(prior: str) -> Callable[[], Entry]:
    def make() -> Entry:
        model = models.Autoencoder(D, 2, (32,), prior=prior, name="reg_ae")
        return Entry(model, guides.DeltaEncoder(D, 2, (32,), name="reg_ae_q"), binary_batch(),
                     {}, {"z": (2,)}, deterministic_guide=True, samples_prior=prior != "flat")
    return make


def _wae() -> Entry:  # the pair `ppvae train --model wae` builds: a VAE decoder, a delta encoder
    model = models.VAE(D, 2, (32,), name="reg_wae")
    return Entry(model, guides.DeltaEncoder(D, 2, (32,), name="reg_wae_q"), binary_batch(), {},
                 {"z": (2,)}, deterministic_guide=True)


def _supervised() -> Entry:
    model = models.SupervisedVAE(D, C, 2, (32,), name="reg_sup")
    return Entry(model, guides.MLPEncoder(D, 2, (32,), name="reg_sup_q"), binary_batch(),
                 {"y": labels(missing=0.4)}, {"z": (2,)})


def _bayesian() -> Entry:
    x = binary_batch()
    model = models.BayesianVAE(D, 2, (16,), num_data=100, name="reg_bvae")
    weights = models.WeightGuide(model, name="reg_bvae_w")
    encoder = guides.MLPEncoder(D, 2, (32,), name="reg_bvae_q")
    return Entry(model.at(weights), encoder, x, {}, {"z": (2,)}, train_model=model,
                 train_guide=model.guide_with(weights, encoder))


def _vq(ema: bool) -> Callable[[], Entry]:
    def make() -> Entry:
        model = models.VQVAE(D, 8, 3, 4, (32,), ema=ema, name="reg_vq")
        return Entry(model, guides.VQEncoder(model, (32,), name="reg_vq_q"), binary_batch(), {},
                     {"z": (4, 3)}, deterministic_guide=True, pyro_elbo=True)
    return make


def _sparse(variant: str) -> Callable[[], Entry]:
    def make() -> Entry:  # an overcomplete code: K = 80 > D = 64
        l1 = 0.5 if variant == "l1" else 0.0
        model = models.SparseAutoencoder(D, 80, (32,), l1=l1, name="reg_sparse")
        guide = guides.SparseEncoder(D, 80, (32,), name="reg_sparse_q",
                                     activation="sigmoid" if variant == "kl" else None,
                                     k=8 if variant == "topk" else None)
        return Entry(model, guide, binary_batch(), {}, {"z": (80,)}, deterministic_guide=True,
                     samples_prior=l1 > 0)
    return make


REGISTRY: dict[str, Callable[[], Entry]] = {
    "ppca/linear_full": _ppca,
    "vae/mlp": _vae(guides.MLPEncoder),
    "vae/fullcov": _vae(guides.FullCovEncoder),
    "vae/flow": _vae(guides.FlowEncoder),
    "conv_vae/conv": _conv,
    "cvae/conditional": _cvae(False),
    "cvae_learned_prior/conditional": _cvae(True),
    "hierarchical/bottom_up": _hierarchical(False),
    "hierarchical/ladder": _hierarchical(True),
    "autoencoder/delta": _autoencoder("flat"),
    "autoencoder_map/delta": _autoencoder("normal"),
    "wae/delta": _wae,
    "supervised/mlp": _supervised,
    "bayesian_vae/mlp": _bayesian,
    "vqvae/vq": _vq(False),
    "vqvae_ema/vq": _vq(True),
    "sparse_ae_l1/sparse": _sparse("l1"),
    "sparse_ae_kl/sparse": _sparse("kl"),
    "sparse_ae_topk/sparse": _sparse("topk"),
}
