"""The sparse autoencoder three ways on the digits: L1 (a Laplace prior), a target rate, top-k.

An overcomplete code (100 units for 64 pixels) decoded by ``models.SparseAutoencoder`` from a
point-mass ``guides.SparseEncoder``: with an L1 penalty written as the model's Laplace prior,
with sigmoid codes and ``ppvae.sparsity_kl`` pulling each unit's mean activation to 5%, and as
the k-sparse autoencoder keeping the 10 largest units (Makhzani and Frey 2014). Prints each
code's sparsity (``ppvae.code_sparsity``) and reconstruction error, and saves reconstructions.
"""

from _common import digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
variants = {  # name: (l1 of the model, guide options, objective)
    "l1": (0.1, {}, None),
    "rate": (0.0, {"activation": "sigmoid"}, ppvae.sparsity_kl(rate=0.05, weight=3.0)),
    "top-k": (0.0, {"k": 10}, None),
}
for name, (l1, options, objective) in variants.items():
    model = models.SparseAutoencoder(64, 100, (64,), l1=l1, name=f"sparse_{name}")
    guide = guides.SparseEncoder(64, 100, (64,), **options, name=f"sparse_{name}_q")
    ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3,
              objective=objective, progress=False, seed=args.seed)
    rec = ppvae.reconstruction_error(model, guide, data.test)
    print(f"{name:>6}: {ppvae.code_sparsity(guide, data.test).summary()}; reconstruction "
          f"error {rec.mean:.2f} ± {rec.mean_stderr:.2f} nats per digit")
    save(plots.reconstructions(model, guide, data.test[:10],
                               title=f"Sparse autoencoder ({name}): test digits (top) and "
                                     "reconstructions (bottom)"), args.out, f"sparse_{name}")
