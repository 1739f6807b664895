"""Bayesian VAE on the digits: a Gaussian prior over the decoder weights, trained by SVI.

``models.BayesianVAE`` with ``models.WeightGuide`` (mean-field q(W), global) and
``guides.MLPEncoder`` q(z | x). The full pair has global latents, so ppvae's per-datapoint
analyses run on the conditional model at fixed weights (``BayesianVAE.at``): held-out bounds of
log p(x | W) at the mean of q(W) and at one draw from it. Training uses Pyro's SVI directly
(the data plate is scaled to the training-set size, so the KL of W counts once per epoch).
"""

import pyro
import torch
from _common import bounds, digits, parse, save
from pyro.infer import SVI, Trace_ELBO

from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__, epochs=25)
data = digits()
x = data.train
model = models.BayesianVAE(64, 2, (64,), prior_scale=1.0, num_data=len(x), name="bvae")
weights = models.WeightGuide(model, name="bvae_w")
encoder = guides.MLPEncoder(64, 2, (128,), name="bvae_q")
svi = SVI(model, model.guide_with(weights, encoder), pyro.optim.Adam({"lr": 3e-3}), Trace_ELBO())
g = torch.Generator().manual_seed(args.seed)
for _ in range(args.epochs):  # each step's loss estimates the full-data minus ELBO
    losses = [svi.step(x[idx]) for idx in torch.randperm(len(x), generator=g).split(64)]
print(f"last epoch: minus ELBO (KL of W included) {sum(losses) / len(losses) / len(x):.2f} "
      "per digit")
at_mean = model.at(weights)
bounds(at_mean, encoder, data.test, "Bayesian VAE at the mean of q(W)")
bounds(model.at(weights, data.test, how="sample"), encoder, data.test,
       "Bayesian VAE at one draw of q(W)")
save(plots.sample_grid(at_mean, data.test, 64), args.out, "samples_at_mean")
save(plots.reconstructions(at_mean, encoder, data.test[:10]), args.out, "reconstructions")
save(plots.latent_manifold(at_mean, data.test, n=12), args.out, "manifold")
