"""The core of the engine, on which everything else is built.

The model/guide contract, the one trace primitive, per-datapoint log weights, bounds, the
potential for MCMC, and fixed globals.
"""
