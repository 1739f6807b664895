"""Per-datapoint (non-amortized) variational inference: the optimal q* of each family."""
