"""Training: objectives, ``fit`` and its state, checkpoints, interrupt handling, speed-ups.

``fit`` trains on the mean per-datapoint objective whatever scale a model declares
(:mod:`~ppvae.train.scaling`), with ppvae's objectives or any ``pyro.infer`` ELBO
(:mod:`~ppvae.train.pyro_elbos`), ``torch.optim`` / ``pyro.optim`` optimizers
(:mod:`~ppvae.train.settings`) and tensors, torch Datasets or DataLoaders
(:mod:`~ppvae.train.data`).

The speed-up layer (``train.speedup``) is the one place that touches Pyro internals, but for
:mod:`~ppvae.train.pyro_elbos` dropping a copied Jit ELBO's cached compiled function (so that it
compiles for the pair it is copied for).

:mod:`~ppvae.train.callbacks`: fit's callback interface (:class:`Callback`: on start, step,
epoch, end) and its loggers :class:`TensorBoardLogger` and :class:`MLflowLogger`.
"""

from .callbacks import Callback, MLflowLogger, TensorBoardLogger

__all__ = ["Callback", "MLflowLogger", "TensorBoardLogger"]
