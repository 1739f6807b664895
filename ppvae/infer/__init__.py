"""Inference algorithms over any (model, guide) pair.

Batched HMC and NUTS, AIS and BDMC, MCMC diagnostics, and per-datapoint (non-amortized) VI.
"""
