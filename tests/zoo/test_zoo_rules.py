"""The rules of the zoo's special models, checked against hand computations.

* Bayesian VAE: the full pair (global weights) is rejected with a pointer to fix_globals; the
  fixed pair's log weights equal log p(x | z, W) + log p(z) - log q(z | x) at the given W.
* VQ-VAE: its latent is reported discrete, continuous-only analyses refuse it, and its log
  weight is exactly log p(x | z_q) - P log K for every particle.
* Supervised VAE: a missing label (-1) contributes nothing to the log weights.
* Autoencoder: the delta guide's log weight is log p(x | f(x)) (flat prior), for every particle.
"""

import math

import pyro.distributions as dist
import pytest
import torch
from registry import REGISTRY

import ppvae
import ppvae.core.globals
from ppvae.models.vqvae import UniformCodebook


def test_bayesian_vae_needs_fixed_globals():
    e = REGISTRY["bayesian_vae/mlp"]()
    with pytest.raises(ppvae.ContractError, match="fix_globals"):
        ppvae.check_pair(e.train_model, e.train_guide, e.x)
    names = ppvae.core.globals.global_latent_names(e.train_guide, e.x)
    assert len(names) == 4 and all(n.startswith("reg_bvae.layers.") for n in names)


def test_bayesian_vae_fixed_log_weights_by_hand():
    e = REGISTRY["bayesian_vae/mlp"]()
    bvae = e.train_model
    values = ppvae.core.globals.global_values(e.train_guide, e.x, how="sample")
    fixed = ppvae.fix_globals(bvae, values)
    info = ppvae.check_pair(fixed, e.guide, e.x)  # checked first: its draws are not replayed
    torch.manual_seed(3)
    lw = ppvae.log_weights(fixed, e.guide, e.x, 1, info=info)[0]  # [N]
    torch.manual_seed(3)  # replay the draw of the one particle
    q = e.guide.distribution(e.x)
    z = q.rsample((1,))[0]  # [N, K]
    weights = [(values[f"reg_bvae.layers.{i}.weight"], values[f"reg_bvae.layers.{i}.bias"])
               for i in range(2)]
    logits = bvae.logits(z, weights)
    manual = (dist.Bernoulli(logits=logits).log_prob(e.x).sum(-1)
              + dist.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z))
    assert torch.allclose(lw, manual.detach(), atol=1e-4)


def test_vqvae_is_discrete_and_its_bound_is_exact():
    e = REGISTRY["vqvae/vq"]()
    info = ppvae.check_pair(e.model, e.guide, e.x)
    assert info.discrete == ("z",)
    with pytest.raises(ppvae.ContractError, match="discrete support"):
        info.require_continuous("HMC")
    with torch.no_grad():
        lw = ppvae.log_weights(e.model, e.guide, e.x, 3)  # [3, N]
        z_e = e.guide.encode(e.x)
        codes = e.model.quantize(z_e)[1]  # [N, P, C]
        logits = e.model.decoder(codes.flatten(-2))
        manual = (dist.Bernoulli(logits=logits).log_prob(e.x).sum(-1)
                  - e.model.num_positions * math.log(e.model.num_codes))
    assert torch.allclose(lw, manual.expand(3, -1), atol=1e-4)
    off_code = codes + 0.1  # not codebook rows: outside the prior's support
    assert torch.isinf(UniformCodebook(e.model.codebook, 4).log_prob(off_code)).all()


def test_missing_labels_contribute_nothing():
    e = REGISTRY["supervised/mlp"]()
    y = e.kwargs["y"]
    assert (y < 0).any() and (y >= 0).any()
    torch.manual_seed(5)
    lw = ppvae.log_weights(e.model, e.guide, e.x, 2, model_kwargs={"y": y})
    torch.manual_seed(5)
    lw_none = ppvae.log_weights(e.model, e.guide, e.x, 2, model_kwargs={"y": torch.full_like(y,
                                                                                             -1)})
    missing = y < 0
    assert torch.allclose(lw[:, missing], lw_none[:, missing])
    assert (lw[:, ~missing] < lw_none[:, ~missing]).all()  # an observed label costs log p(y|z)


def test_autoencoder_log_weight_is_the_reconstruction_likelihood():
    e = REGISTRY["autoencoder/delta"]()
    with torch.no_grad():
        lw = ppvae.log_weights(e.model, e.guide, e.x, 4)  # [4, N]
        logits = e.model.decoder(e.guide.encode(e.x))
        manual = dist.Bernoulli(logits=logits).log_prob(e.x).sum(-1)
    assert torch.allclose(lw, manual.expand(4, -1), atol=1e-5)
