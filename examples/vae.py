"""VAE with a 2-D latent on the digits: diagonal, full-covariance and flow encoders.

Kingma and Welling (2014): trains ``models.VAE`` with ``guides.MLPEncoder``, then with
``guides.FullCovEncoder`` and ``guides.FlowEncoder`` (inverse autoregressive flow, Kingma et al.
2016); prints held-out ELBO and IWAE of each; saves, for the diagonal encoder, prior samples,
reconstructions, the 2-D latent manifold (inverse-CDF grid, their figure 4), the latent scatter
by label, an interpolation and the KL-per-dimension diagnostic.
"""

from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots
from ppvae.analysis.collapse import posterior_collapse

args = parse(__doc__)
data = digits()
x_test, y_test = data.test, data.test_labels
for label, make_guide in (("diag", guides.MLPEncoder), ("fullcov", guides.FullCovEncoder),
                          ("flow", guides.FlowEncoder)):
    model = models.VAE(64, 2, (128,), name=f"vae_{label}")
    guide = make_guide(64, 2, (128,), name=f"vae_{label}_q")
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
              seed=args.seed)
    bounds(model, guide, x_test, f"VAE, {label} encoder")
    if label == "diag":
        model_diag, guide_diag = model, guide
model, guide = model_diag, guide_diag  # figures of the diagonal-encoder VAE
save(plots.sample_grid(model, x_test, 64), args.out, "samples")
save(plots.reconstructions(model, guide, x_test[:10]), args.out, "reconstructions")
save(plots.latent_manifold(model, x_test, n=15), args.out, "manifold")
save(plots.latent_scatter(guide, x_test, y_test), args.out, "latent_scatter")
save(plots.interpolation(model, guide, x_test[:2]), args.out, "interpolation")
save(plots.collapse_plot(posterior_collapse(model, guide, x_test)), args.out, "kl_per_dim")
