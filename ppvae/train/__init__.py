"""Training: objectives, ``fit`` and its state, checkpoints, interrupt handling, speed-ups.

The speed-up layer (``train.speedup``) is the one place that touches Pyro internals.
"""
