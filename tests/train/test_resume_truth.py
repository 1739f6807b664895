"""What fit, resume and checkpoints claim is what they did (issue 17).

restore_best across a resume, a rollback that cannot recover, the cosine schedule over the
current call's epochs (and a rollback's lasting reduction under it), the learning rate refused
by name, malformed and unsafe checkpoint files, stale temporary files, symlinked checkpoints,
and ``chunk_size``.
"""

import math
import pickle
import warnings

import pyro
import pytest
import torch
from faults import PoisonOnce

import ppvae
from ppvae.models import VAE
from ppvae.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_meta,
    remove_stale_temps,
    save_checkpoint,
)
from ppvae.train.objectives import ELBO
from ppvae.train.params import collect_params


def _vae(seed=0, cls=VAE):
    """A fresh VAE: a cleared param store, so that the fixed name adopts no stored values."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return cls(64, 4, (32,), name="vae_truth")


def _state(vae):
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 1. restore_best holds across a resume ------------------------------------------------------

def _worse_late(opt):
    """lr x 100 from epoch 2 on: the validation ELBO peaks at epoch 2 and then falls."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 if e < 2 else 100.0)


def _best_run(digits, epochs, seen=None, **kw):
    """fit with validation and restore_best; ``seen[e]``: the parameters at the end of epoch e."""
    def keep(epoch, **_):
        if seen is not None:
            seen[epoch - 1] = _state(vae)

    vae = kw.pop("vae", None) or _vae(0)
    r = ppvae.fit(vae, vae.guide, digits.train[:128], valid=digits.valid[:64], epochs=epochs,
                  batch_size=32, lr=1e-2, schedule=_worse_late, restore_best=True, quiet=True,
                  device="cpu", seed=1, on_epoch=keep, **kw)
    return r, vae


def test_restore_best_returns_the_best_epoch_also_after_a_resume(tmp_path, digits):
    seen: dict[int, dict] = {}
    full, vae = _best_run(digits, 5, seen)
    best = full.best_epoch
    assert best < 3 and full.valid_elbo[-1] < full.valid_elbo[best]  # the set-up's premise
    assert _equal(_state(vae), seen[best])  # uninterrupted: the best epoch's parameters
    ck = tmp_path / "run.pt"
    first, _ = _best_run(digits, 4, checkpoint=ck)  # the checkpoint's epoch 3 is not the best
    assert first.best_epoch == best
    rest, vae = _best_run(digits, 5, checkpoint=ck, resume=ck, vae=_vae(7))
    assert rest.valid_elbo == full.valid_elbo and rest.best_epoch == best
    assert rest.message == "trained 1 epochs"
    assert _equal(_state(vae), seen[best])  # bit for bit the uninterrupted run's
    raw = torch.load(ck, weights_only=True)  # still plain tensors and containers
    assert raw["best"]["epoch"] == best
    by_key = {k.removeprefix("vae_truth.").replace("$$$", "."): v  # store name -> state key
              for k, v in raw["best"]["params"].items()}
    assert _equal(by_key, {k: v for k, v in seen[best].items() if k in by_key})
    assert len(by_key) == len(list(vae.parameters()))
    # the best epoch being the checkpoint's own: restored from the checkpoint's parameters
    ck2 = tmp_path / "at_best.pt"
    _best_run(digits, best + 1, checkpoint=ck2)
    assert "best" not in torch.load(ck2, weights_only=True)
    again, vae = _best_run(digits, 5, checkpoint=ck2, resume=ck2, vae=_vae(8))
    assert again.best_epoch == best and _equal(_state(vae), seen[best])


def test_a_checkpoint_without_the_best_epoch_says_so_when_resumed(tmp_path, digits):
    seen: dict[int, dict] = {}
    ck = tmp_path / "old.pt"
    _best_run(digits, 4, checkpoint=ck)
    payload = torch.load(ck, weights_only=True)
    del payload["best"]  # as ppvae wrote checkpoints before the entry existed
    torch.save(payload, ck)
    r, vae = _best_run(digits, 5, seen, resume=ck, vae=_vae(7))
    assert r.stopped == "completed" and r.best_epoch < 3
    assert f"the best epoch's ({r.best_epoch}) parameters were not available" in r.message
    assert "the parameters returned are the last epoch's (4), not the best" in r.message
    assert _equal(_state(vae), seen[4])


# -- 2. a rollback that could not recover is a failure ------------------------------------------

class _Poisonable(VAE):
    """A VAE whose likelihood turns NaN for every batch once ``poisoned`` is set."""

    poisoned = False

    def _likelihood(self, out):
        return super()._likelihood(out * math.nan if self.poisoned else out)


def test_an_epoch_rolled_back_entirely_stops_as_non_finite(tmp_path, digits):
    vae, ck = _vae(0, _Poisonable), tmp_path / "nan.pt"
    at_one: dict = {}

    def poison(epoch, **_):
        at_one.update(_state(vae))
        vae.poisoned = True  # every window of every later epoch is non-finite

    r = ppvae.fit(vae, vae.guide, digits.train[:128], epochs=4, batch_size=32, quiet=True,
                  device="cpu", nan_policy="rollback", max_rollbacks=3, check_every=1000,
                  checkpoint=ck, on_epoch=poison)
    assert r.stopped == "non_finite", r
    assert r.epochs == 1 and len(r.train_objective) == 1 and len(r.lr) == 1
    assert all(math.isfinite(v) for v in r.train_objective)
    assert r.rollbacks == 1
    assert "the rollback could not recover: epoch 1 (0-based) kept no finite window" in r.message
    assert "1 rollback(s) in all" in r.message and "last finite state" in r.message
    assert read_meta(ck).epoch == 1  # no checkpoint claims the failed epoch
    assert _equal(_state(vae), at_one)  # the last finite state: the end of epoch 0


# -- 3. the cosine schedule follows the current call's epochs -----------------------------------

def _cosine(lr0, e, epochs):
    return lr0 * (0.5 * (1.0 + math.cos(math.pi * e / epochs)))


def _cos_run(digits, epochs, **kw):
    vae = kw.pop("vae", None) or _vae(2)
    kw.setdefault("schedule", "cosine")
    r = ppvae.fit(vae, vae.guide, digits.train[:96], epochs=epochs, batch_size=32, lr=3e-3,
                  quiet=True, device="cpu", seed=3, **kw)
    return r, vae


def test_cosine_is_the_closed_form_over_this_calls_epochs(tmp_path, digits):
    full, _ = _cos_run(digits, 4)
    assert full.lr == pytest.approx([_cosine(3e-3, e, 4) for e in range(4)], rel=1e-12)
    ck = tmp_path / "cos.pt"
    _cos_run(digits, 2, checkpoint=ck)
    more, _ = _cos_run(digits, 4, checkpoint=ck, resume=ck)
    assert more.lr[:2] == pytest.approx([3e-3, _cosine(3e-3, 1, 2)], rel=1e-12)
    assert more.lr[2:] == pytest.approx([_cosine(3e-3, e, 4) for e in (2, 3)], rel=1e-12)
    assert all(a >= b for a, b in zip(more.lr, more.lr[1:], strict=False))  # never back up


class _Stop(Exception):
    """Raised by on_epoch to interrupt a run after an epoch's checkpoint."""


def test_cosine_resumed_with_the_same_epochs_continues_exactly(tmp_path, digits):
    full, vae_full = _cos_run(digits, 4)
    ck = tmp_path / "cos.pt"

    def interrupt(epoch, **_):
        if epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        _cos_run(digits, 4, checkpoint=ck, on_epoch=interrupt)
    rest, vae = _cos_run(digits, 4, checkpoint=ck, resume=ck, vae=_vae(9))
    assert rest.lr == full.lr and rest.train_objective == full.train_objective
    assert _equal(_state(vae), _state(vae_full))


def test_cosine_loads_the_cosine_annealing_state_of_older_checkpoints(tmp_path, digits):
    ck = tmp_path / "old_cos.pt"
    _cos_run(digits, 2, checkpoint=ck,
             schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2))
    assert "T_max" in torch.load(ck, weights_only=True)["scheduler"]
    r, _ = _cos_run(digits, 4, checkpoint=ck, resume=ck)
    assert r.stopped == "completed"
    assert r.lr[2:] == pytest.approx([_cosine(3e-3, e, 4) for e in (2, 3)], rel=1e-12)


def test_a_rollback_lowers_the_cosine_schedule_lastingly(digits):
    vae = _vae(5)
    r = ppvae.fit(vae, vae.guide, digits.train[:96], epochs=4, batch_size=32, quiet=True,
                  device="cpu", nan_policy="rollback", check_every=1, schedule="cosine",
                  optimizer=lambda ps: PoisonOnce(ps, at=2))
    assert r.stopped == "completed" and r.rollbacks == 1
    assert r.lr == pytest.approx([_cosine(0.5e-3, e, 4) for e in range(4)], rel=1e-12)


# -- 4. the learning rate is refused by name ----------------------------------------------------

@pytest.mark.parametrize("lr", [math.inf, -math.inf, math.nan, 0.0, -1e-3, True, "1e-3"])
def test_a_learning_rate_that_is_not_finite_and_positive_is_refused(digits, lr):
    vae = _vae(1)
    before = _state(vae)
    for opt in (None, torch.optim.SGD):
        with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got"):
            ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, lr=lr, optimizer=opt,
                      quiet=True, device="cpu")
    assert _equal(_state(vae), before)


def test_optimizers_that_bring_their_own_learning_rate_ignore_lr(digits):
    vae = _vae(1)
    for opt in (pyro.optim.Adam({"lr": 1e-3}), lambda ps: torch.optim.Adam(ps, lr=1e-3)):
        r = ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, batch_size=32, lr=math.inf,
                      optimizer=opt, quiet=True, device="cpu")
        assert r.stopped == "completed" and r.lr == [1e-3]


# -- 5. malformed and unsafe checkpoint files ---------------------------------------------------

def _checkpoint(path):
    vae = _vae(4)
    x = torch.bernoulli(torch.full((4, 64), 0.4))
    info = ppvae.check_pair(vae, vae.guide, x)
    params = collect_params(lambda: ELBO().loss(vae, vae.guide, x, info=info))
    save_checkpoint(path, params=params, model=vae, guide=vae.guide, epoch=1, step=2,
                    config={}, state={})
    return vae, params


def test_a_checkpoint_missing_an_entry_is_named_before_anything_is_loaded(tmp_path, digits):
    good = tmp_path / "good.pt"
    vae, params = _checkpoint(good)
    for entry in ("rng", "params", "meta_json"):
        bad = tmp_path / f"no_{entry}.pt"
        payload = torch.load(good, weights_only=True)
        del payload[entry]
        torch.save(payload, bad)
        with torch.no_grad():
            for p in params.values():
                p.add_(1.0)
        before = {k: p.clone() for k, p in params.items()}
        with pytest.raises(CheckpointError, match=rf"no_{entry}\.pt: malformed checkpoint: "
                                                  rf"missing entry '{entry}'"):
            load_checkpoint(bad, params=params, model=vae, guide=vae.guide)
        assert all(torch.equal(p, before[k]) for k, p in params.items())  # untouched
    x = digits.train[:64]
    with pytest.raises(CheckpointError, match=r"no_rng\.pt: malformed checkpoint: missing "
                                              r"entry 'rng'"):
        ppvae.fit(vae, vae.guide, x, epochs=1, quiet=True, device="cpu",
                  resume=tmp_path / "no_rng.pt")


class _Arbitrary:
    """An object that weights_only loading must refuse to unpickle."""


def test_a_raw_pickle_is_refused_with_our_error_only(tmp_path):
    raw = tmp_path / "raw.pt"
    with raw.open("wb") as f:
        pickle.dump(_Arbitrary(), f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=r"raw\.pt: not a readable ppvae checkpoint"):
            read_meta(raw)
    assert [str(w.message) for w in caught] == []


# -- 7. stale temporary files of killed writes; symlinks ----------------------------------------

def test_stale_temporary_files_are_removed_and_nothing_else(tmp_path, digits):
    ck = tmp_path / "checkpoint.pt"
    stale = [tmp_path / ".checkpoint.pt.k1ll3d.tmp", tmp_path / ".checkpoint.pt.x_y.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = [tmp_path / ".other.pt.abc.tmp", tmp_path / "checkpoint.pt.abc.tmp",
            tmp_path / ".checkpoint.pt.abc.tmpx"]
    for p in keep:
        p.write_bytes(b"not ours")
    (tmp_path / ".checkpoint.pt.dir.tmp").mkdir()
    (tmp_path / ".checkpoint.pt.link.tmp").symlink_to(keep[0])
    assert remove_stale_temps(ck) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert (tmp_path / ".checkpoint.pt.dir.tmp").is_dir()
    assert (tmp_path / ".checkpoint.pt.link.tmp").is_symlink()
    assert remove_stale_temps(tmp_path / "missing" / "checkpoint.pt") == []
    stale[0].write_bytes(b"half a checkpoint")  # fit removes them before it writes
    vae = _vae(3)
    ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, quiet=True, device="cpu",
              checkpoint=ck)
    assert not stale[0].exists() and read_meta(ck).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.")) \
        == [".checkpoint.pt.abc.tmpx", ".checkpoint.pt.dir.tmp", ".checkpoint.pt.link.tmp"]


def test_a_symlinked_checkpoint_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.pt"
    target.write_bytes(b"someone else's file")
    ck = tmp_path / "checkpoint.pt"
    ck.symlink_to(target)
    _checkpoint(ck)
    assert target.read_bytes() == b"someone else's file"
    assert not ck.is_symlink() and read_meta(ck).epoch == 1


# -- 6. chunk_size ------------------------------------------------------------------------------

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
