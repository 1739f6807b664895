"""Test set-up in the style of Pyro/NumPyro: validation on, a fresh param store and a fixed seed
per test, float64 on request for exact checks, and a ``slow`` marker (see pyproject.toml)."""

import matplotlib
import pyro
import pytest
import torch

matplotlib.use("Agg")
# one intra-op thread: the tests use small tensors, where OpenMP threads cost more than
# they give (and spin badly when the machine is busy)
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _pyro_test_setup(request):
    pyro.enable_validation(True)
    pyro.clear_param_store()
    seed = 0
    marker = request.node.get_closest_marker("seed")
    if marker is not None:
        seed = marker.args[0]
    pyro.set_rng_seed(seed)
    old_dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(old_dtype)
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits():
    """The bundled 8x8 digits, statically binarized (train 1297 / valid 200 / test 300)."""
    from ppvae.data import load_dataset

    return load_dataset("digits", binarize="static")


@pytest.fixture
def float64():
    """Run the test with float64 as the default dtype (exact PPCA checks)."""
    torch.set_default_dtype(torch.float64)
    yield
