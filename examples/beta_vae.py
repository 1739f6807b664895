"""beta-VAE on the digits: latent traversals and the posterior-collapse diagnostic.

Higgins et al. (2017): the KL term is weighted by beta > 1 during training
(``ppvae.beta_vae``, a training wrapper: the model stays the same, so evaluation is at beta = 1).
Saves the traversals of every latent dimension and the KL per dimension with the active-unit
count (Burda et al. 2016), which shows how many of the 8 dimensions beta = 2 leaves in use.
"""

from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots
from ppvae.analysis.collapse import posterior_collapse

args = parse(__doc__)
data = digits()
model = models.VAE(64, 8, (128,), name="beta_vae")
guide = guides.MLPEncoder(64, 8, (128,), name="beta_vae_q")
ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
          objective=ppvae.beta_vae(2.0), seed=args.seed)
bounds(model, guide, data.test, "beta-VAE (beta = 2), evaluated at beta = 1")
report = posterior_collapse(model, guide, data.test)
print(f"active units: {report.num_active} of 8; KL per dimension: "
      f"{[round(v, 2) for v in report.kl.tolist()]}")
save(plots.latent_traversals(model, guide, data.test[:1]), args.out, "traversals")
save(plots.collapse_plot(report), args.out, "kl_per_dim")
save(plots.sample_grid(model, data.test, 64), args.out, "samples")
