"""Conditional VAE on the digits (Sohn et al. 2015): label-conditioned samples.

``models.CVAE`` with a learned conditional prior p(z | c) and ``guides.ConditionalEncoder``
q(z | x, c); the labels travel with the data as ``y`` (``ppvae.fit(batch_kw=...)``). Saves a
grid with one row per digit class, each image drawn from p(z | c) and decoded with c.
"""

import torch
from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
model = models.CVAE(64, 10, 4, (128,), learned_prior=True, name="cvae")
guide = guides.ConditionalEncoder(64, 10, 4, (128,), name="cvae_q")
ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
          batch_kw={"y": data.train_labels}, valid_batch_kw={"y": data.valid_labels},
          seed=args.seed)
bounds(model, guide, data.test, "CVAE (log p(x | c))", y=data.test_labels)
rows = torch.arange(10).repeat_interleave(10)  # 10 samples per class, one class per row
save(plots.sample_grid(model, data.test, 100, model_kwargs={"y": rows}), args.out,
     "samples_by_label")
save(plots.reconstructions(model, guide, data.test[:10],
                           model_kwargs={"y": data.test_labels[:10]}), args.out,
     "reconstructions")
