"""Analyses built on the engine.

The gap decomposition and its report, posterior comparison, posterior-collapse diagnostics,
probabilistic PCA closed forms, and figures.
"""
