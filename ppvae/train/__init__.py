"""Training: objectives, ``fit`` and its state, checkpoints, interrupt handling, and the speed-up
layer (``train.speedup``), the one place that touches Pyro internals."""
