"""Per-datapoint numbers do not depend on the batch: evaluation puts the pair's modules in eval
mode (BatchNorm uses its running statistics) and restores their modes afterwards."""

import pyro
import torch
from clients import CLIENTS

import ppvae
from ppvae.core.modes import evaluation, modules_of

# two batches of the same size sharing their first four documents: with one particle and the
# same seed, those four get the same noise in both, so only the batch mates differ
A, B = list(range(8)), [0, 1, 2, 3, 8, 9, 10, 11]


def _lw(c, rows, eval_modules=True):
    pyro.set_rng_seed(0)
    with torch.no_grad():
        return ppvae.log_weights(c.model, c.guide, c.x[rows], 1, eval_modules=eval_modules)[0]


def test_a_documents_weights_do_not_depend_on_the_rest_of_its_batch():
    c = CLIENTS["prodlda"]()  # BatchNorm in the guide, in training mode as built
    net = c.modules[0]
    assert net.training
    torch.testing.assert_close(_lw(c, A)[:4], _lw(c, B)[:4], rtol=0, atol=0)
    assert net.training and net.bn.training  # the caller's modes come back


def test_in_training_mode_the_same_numbers_would_depend_on_the_batch():
    """The property above is not vacuous: BatchNorm in training mode mixes the batch."""
    c = CLIENTS["prodlda"]()
    diff = _lw(c, A, eval_modules=False)[:4] - _lw(c, B, eval_modules=False)[:4]
    assert diff.abs().max() > 1e-3


def test_modules_are_found_in_methods_and_closures():
    c = CLIENTS["factor_analysis"]()  # the encoder is closed over by a plain function
    assert modules_of(c.guide) == [c.modules[0]]
    p = CLIENTS["prodlda"]()
    assert modules_of(p.guide) == [p.modules[0]]  # a bound method's object
    with evaluation(p.guide):
        assert not p.modules[0].bn.training
    assert p.modules[0].bn.training
