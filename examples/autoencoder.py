"""The plain autoencoder as a VAE with a delta guide, trained by the same fit on the digits.

``models.Autoencoder`` (flat prior: the objective is the reconstruction log-likelihood) with
``guides.DeltaEncoder``. The number printed as "ELBO" is that objective, not a bound on
log p(x) (see the model's docstring); IWAE equals it because all particles coincide.
Saves reconstructions, the latent scatter and an interpolation.
"""

import torch
from _common import digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
model = models.Autoencoder(64, 2, (128,), prior="flat", name="ae")
guide = guides.DeltaEncoder(64, 2, (128,), name="ae_q")
ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
          seed=args.seed)
with torch.no_grad():
    rec = ppvae.elbo(model, guide, data.test, num_samples=2)
print(f"autoencoder: reconstruction log-likelihood {rec.mean:.2f} nats per digit (not a bound)")
save(plots.reconstructions(model, guide, data.test[:10]), args.out, "reconstructions")
save(plots.latent_scatter(guide, data.test, data.test_labels), args.out, "latent_scatter")
save(plots.interpolation(model, guide, data.test[:2]), args.out, "interpolation")
