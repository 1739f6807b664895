"""The denoising autoencoder (Vincent et al. 2008): the guide sees corrupted digits, the model
clean ones.

``ppvae.denoising("masking", 0.25)`` wraps the training objective: each step the encoder gets the
digits with a quarter of their pixels zeroed, and the decoder is scored on the clean digits. The
model and guide stay the plain autoencoder's (``models.Autoencoder`` + ``guides.DeltaEncoder``),
so the trained pair is evaluated on clean data like any other. Trains it and a plain
autoencoder with the same budget and seed, prints both reconstruction errors of masked and of
clean test digits, and saves the denoised reconstructions.
"""

import torch
from _common import digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
masked = ppvae.Corruption("masking", 0.25)
pairs = {}
for label, objective in (("plain", None), ("denoising", ppvae.denoising("masking", 0.25))):
    model = models.Autoencoder(64, 16, (64,), prior="flat", name=f"{label}_ae")
    guide = guides.DeltaEncoder(64, 16, (64,), name=f"{label}_ae_q")
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3,
              objective=objective, progress=False, seed=args.seed)
    noisy = ppvae.reconstruction_error(model, guide, data.test, corruption=masked, seed=1)
    clean = ppvae.reconstruction_error(model, guide, data.test)
    print(f"{label:>9} autoencoder: reconstruction error of masked test digits "
          f"{noisy.mean:.2f} ± {noisy.mean_stderr:.2f}, of clean ones {clean.mean:.2f} ± "
          f"{clean.mean_stderr:.2f} nats per digit")
    pairs[label] = (model, guide)

x = masked(data.test[:10], torch.Generator().manual_seed(1))
model, guide = pairs["denoising"]
save(plots.reconstructions(model, guide, x, title="Masked test digits (top) and the denoising "
                           "autoencoder's reconstructions (bottom)"), args.out, "denoised")
