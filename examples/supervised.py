"""Semi-supervised VAE on the digits: a classifier head on z trained jointly, half the labels
hidden (``-1``).

``models.SupervisedVAE`` observes x and y given z (masking the missing labels) with the
amortized ``guides.MLPEncoder`` q(z | x). Prints held-out bounds of log p(x, y) and the test
accuracy of the classifier applied to the encoder's means; saves the latent scatter.
"""

import torch
from _common import bounds, digits, parse, save

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots

args = parse(__doc__)
data = digits()
y_train = data.train_labels.clone()
y_train[1::2] = -1  # every other label is missing
model = models.SupervisedVAE(64, 10, 4, (128,), name="supervised")
guide = guides.MLPEncoder(64, 4, (128,), name="supervised_q")
ppvae.fit(model, guide, data, epochs=args.epochs, batch_size=64, lr=3e-3, quiet=True,
          batch_kw={"y": y_train}, valid_batch_kw={"y": data.valid_labels}, seed=args.seed)
bounds(model, guide, data.test, "supervised VAE (log p(x, y))", y=data.test_labels)
z = plots.encode(guide, data.test)  # [N, 4] encoder means
accuracy = (model.predict(z) == data.test_labels).float().mean()
print(f"test accuracy of the latent classifier: {float(accuracy):.3f} "
      f"(trained with {int((y_train >= 0).sum())} of {len(y_train)} labels)")
save(plots.latent_scatter(guide, data.test, data.test_labels), args.out, "latent_scatter")
with torch.no_grad():
    save(plots.reconstructions(model, guide, data.test[:10],
                               model_kwargs={"y": data.test_labels[:10]}), args.out,
         "reconstructions")
