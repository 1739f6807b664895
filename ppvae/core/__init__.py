"""The core of the engine: the model/guide contract, the one trace primitive, per-datapoint log
weights, bounds, the potential for MCMC, and fixed globals. Everything else is built on these."""
