"""Two-stochastic-layer VAE (z2 -> z1 -> x) on the digits: bottom-up vs ladder inference.

``models.HierarchicalVAE`` trained once with ``guides.BottomUpGuide`` (Burda et al. 2016) and
once with ``guides.LadderGuide`` (Sønderby et al. 2016, precision-weighted top-down
combination); prints held-out ELBO/IWAE of both, saves the top layer's 2-D manifold (z1 drawn
from p(z1 | z2)), samples and the KL per dimension of both layers.
"""

from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots
from ppvae.analysis.collapse import posterior_collapse

args = parse(__doc__)
data = digits()
for label in ("bottom_up", "ladder"):
    model = models.HierarchicalVAE(64, (8, 2), (128,), (64,), name=f"hvae_{label}")
    guide = (guides.LadderGuide(model, (128, 64), name="hvae_ladder_q") if label == "ladder"
             else guides.BottomUpGuide(64, (8, 2), (128,), (64,), name="hvae_bottom_up_q"))
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
              seed=args.seed)
    bounds(model, guide, data.test, f"hierarchical VAE, {label} guide")
save(plots.sample_grid(model, data.test, 64), args.out, "samples")
save(plots.latent_manifold(model, data.test, latent="z2", n=12), args.out, "manifold_z2")
for site in ("z1", "z2"):
    rep = posterior_collapse(model, guide, data.test, latent=site)
    save(plots.collapse_plot(rep), args.out, f"kl_per_dim_{site}")
