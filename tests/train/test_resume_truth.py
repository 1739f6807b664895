"""What fit, resume and checkpoints claim is what they did: restore_best across a resume, a
rollback that cannot recover, the cosine schedule over the current epochs, learning rates,
malformed checkpoints, stale temporary files and symlinks, and ``chunk_size`` (issue 17)."""

import pytest

import ppvae
from ppvae.models import VAE


def _vae(seed=0, name="vae_truth"):
    """A fresh VAE: a cleared param store, so that the fixed name adopts no stored values."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return VAE(64, 4, (32,), name=name)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_chunk_size_zero_or_not_a_positive_integer_is_refused(digits, bad):
    vae, x = _vae(), digits.train[:8]
    for call in (lambda: ppvae.log_weights(vae, vae.guide, x, 4, chunk_size=bad),
                 lambda: ppvae.elbo(vae, vae.guide, x, 4, chunk_size=bad),
                 lambda: ppvae.iwae(vae, vae.guide, x, 4, chunk_size=bad)):
        with pytest.raises(ValueError, match=rf"chunk_size must be an integer >= 1.*{bad!r}"):
            call()
    assert ppvae.log_weights(vae, vae.guide, x, 3, chunk_size=None).shape == (3, 8)
    assert ppvae.log_weights(vae, vae.guide, x, 3, chunk_size=2).shape == (3, 8)
