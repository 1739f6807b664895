"""Convolutional VAE on the 8x8 digits (strided-convolution encoder, transposed-convolution
decoder; ``models.ConvVAE`` with ``guides.ConvEncoder``, side 8, or 28 for MNIST)."""

from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
model = models.ConvVAE(8, 2, 16, name="conv_vae")
guide = guides.ConvEncoder(8, 2, 16, name="conv_vae_q")
ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
          seed=args.seed)
bounds(model, guide, data.test, "conv VAE")
save(plots.sample_grid(model, data.test, 64), args.out, "samples")
save(plots.reconstructions(model, guide, data.test[:10]), args.out, "reconstructions")
save(plots.latent_manifold(model, data.test, n=12), args.out, "manifold")
save(plots.latent_scatter(guide, data.test, data.test_labels), args.out, "latent_scatter")
