"""The speed-up layer: a one-frame Pyro recorder and a captured (JIT) training step.

This is the only part of ppvae allowed to touch Pyro internals such as ``_PYRO_STACK``.
"""
