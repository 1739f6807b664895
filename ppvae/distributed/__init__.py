"""Scaling out with torchrun; outside torchrun every function answers for a single process.

The process group and its collectives (:mod:`.process`), and sharded evaluation of bounds, AIS,
per-datapoint VI (:mod:`.sharded`) and gap reports (:mod:`.gaps`).
"""

from .gaps import sharded_gaps
from .process import (
    all_sum,
    allreduce_gradients,
    barrier,
    broadcast_int,
    broadcast_tensors,
    default_device,
    gather_objects,
    gather_rows,
    init_from_env,
    is_distributed,
    is_main,
    local_rank,
    rank,
    shard_bounds,
    shutdown,
    world_size,
)
from .sharded import (
    sharded_ais,
    sharded_elbo,
    sharded_fit_local,
    sharded_iwae,
    sharded_log_weights,
)

__all__ = [
    "all_sum",
    "allreduce_gradients",
    "barrier",
    "broadcast_int",
    "broadcast_tensors",
    "default_device",
    "gather_objects",
    "gather_rows",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_rank",
    "rank",
    "shard_bounds",
    "sharded_ais",
    "sharded_elbo",
    "sharded_fit_local",
    "sharded_gaps",
    "sharded_iwae",
    "sharded_log_weights",
    "shutdown",
    "world_size",
]
