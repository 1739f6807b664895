"""The Wasserstein autoencoder (WAE-MMD, Tolstikhin et al. 2018) against the plain autoencoder.

Both decode a 4-d code with the same network and a deterministic encoder; the WAE adds
``mmd_weight`` times the squared MMD between the codes of each minibatch and prior draws
(``ppvae.WAE``), the autoencoder has no prior at all. Prints each one's MMD between its codes
and N(0, I) (``ppvae.latent_mmd``) and the negative log-likelihood of its prior samples under a
Bernoulli mixture fitted to the validation digits (``ppvae.prior_sample_score``; the plain
autoencoder's samples decode N(0, I) codes too), and saves both sets of samples.
"""

import pyro
import torch
from _common import digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
pairs = {
    "autoencoder": (models.Autoencoder(64, 4, (64,), prior="flat", name="plain_ae"), None),
    "WAE": (models.VAE(64, 4, (64,), name="wae"), ppvae.WAE(mmd_weight=10.0)),
}
torch.manual_seed(args.seed)
codes = torch.randn(1000, 4)  # N(0, I) draws: the WAE's prior, and the autoencoder's stand-in
for name, (model, objective) in pairs.items():
    guide = guides.DeltaEncoder(64, 4, (64,), name=f"{name}_q")
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3,
              objective=objective, progress=False, seed=args.seed)
    mmd = ppvae.latent_mmd(model, guide, data.test, prior_codes=codes)
    score = ppvae.prior_sample_score(model, data.valid, latents={"z": codes})
    print(f"{name:>11}: MMD² of the test codes to N(0, I) {mmd.mmd:.3f} ± {mmd.stderr:.3f}; "
          f"NLL of samples from N(0, I) codes {score.sample_nll:.2f} ± "
          f"{score.sample_stderr:.2f} nats (the validation digits' own: {score.data_nll:.2f})")
    given = pyro.poutine.condition(model, data={"z": codes[:64]})  # the same 64 codes for both
    save(plots.sample_grid(given, data.test, 64, means=True,
                           title=f"{name}: decoded means E[x | z] of 64 codes z ~ N(0, I)"),
         args.out, f"samples_{name}")
