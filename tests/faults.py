"""Faults the training tests inject: an optimizer that poisons a parameter at one step."""

import math

import torch


class PoisonOnce(torch.optim.Adam):
    """Adam (lr 1e-3) that writes a NaN into the first parameter after its ``at``-th step."""

    def __init__(self, params, at):
        super().__init__(params, lr=1e-3)
        self.at, self.calls = at, 0

    def step(self, closure=None):
        out = super().step(closure)
        self.calls += 1
        if self.calls == self.at:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = math.nan
        return out
