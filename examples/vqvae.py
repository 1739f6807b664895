"""VQ-VAE on the digits (van den Oord et al. 2017): nearest-code quantization with the
straight-through estimator, codebook and commitment losses, and optional EMA codebook updates.

Trains ``models.VQVAE`` with ``guides.VQEncoder`` through ``ppvae.fit`` (its ELBO objective
counts the guide's VQ-loss factor, as Pyro's ``Trace_ELBO`` does). Prints the honest bound
ELBO = log p(x | z_q) - P log K (IWAE equals it: the guide is deterministic) and shows that
continuous-latent analyses refuse this model.
Saves reconstructions and samples with codes drawn uniformly (no learned code prior).
"""

from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
for ema in (False, True):
    model = models.VQVAE(64, num_codes=16, code_dim=4, num_positions=4, hidden=(128,), ema=ema,
                         name=f"vq{'_ema' if ema else ''}")
    guide = guides.VQEncoder(model, (128,), name=f"vq{'_ema' if ema else ''}_q")
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
              seed=args.seed)
    model.eval()  # freeze the EMA codebook for evaluation
    bounds(model, guide, data.test, f"VQ-VAE ({'EMA' if ema else 'gradient'} codebook)", k=10)
try:
    plots.latent_manifold(model, data.test)
except ppvae.ContractError as e:
    print(f"latent manifold refused, as it should be: {e}")
save(plots.reconstructions(model, guide, data.test[:10]), args.out, "reconstructions")
save(plots.sample_grid(model, data.test, 64), args.out, "samples_uniform_codes")
