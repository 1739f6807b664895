"""ppvae.fit: learning on digits, exact reproducibility and resume, NaN safety."""

import math
import os
import signal

import pyro
import pytest
import torch
from faults import PoisonOnce

import ppvae
from ppvae.models import VAE
from ppvae.train.checkpoint import load_checkpoint, read_meta


def _vae(seed=0):
    """A fresh VAE: a cleared param store, so that the fixed name adopts no stored values."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return VAE(64, 4, (32,), name="vae_fit")


def test_fit_on_digits_improves_validation_elbo(digits):
    vae = _vae()
    r = ppvae.fit(vae, vae.guide, digits, epochs=4, batch_size=64, lr=3e-3, quiet=True,
                  device="cpu")
    assert isinstance(r, ppvae.FitResult)
    assert r.stopped == "completed" and r.epochs == 4 and r.steps == 4 * 21
    assert len(r.train_objective) == len(r.valid_elbo) == 4
    # 64 binary pixels: a uniform model scores 64 log 2 = -44.4 nats; a trained VAE beats -31
    # (validation ELBO of 200 rows, one sample each: Monte Carlo se about 0.3 nats)
    assert r.valid_elbo[-1] > -31.0
    assert r.valid_elbo[-1] > r.valid_elbo[0]
    assert r.best_epoch == max(range(4), key=lambda e: r.valid_elbo[e])
    assert r.steps_per_second > 0 and r.wall_time > 0


def test_fit_is_reproducible_with_a_seed(digits):
    results = []
    for _ in range(2):
        vae = _vae(1)
        results.append(ppvae.fit(vae, vae.guide, digits.train[:256], epochs=2, batch_size=32,
                                 quiet=True, device="cpu", seed=3).train_objective)
    assert results[0] == results[1]


def test_resume_gives_the_same_next_epoch(tmp_path, digits):
    x, v = digits.train[:256], digits.valid[:64]
    kw = dict(valid=v, batch_size=32, quiet=True, device="cpu", seed=5,
              schedule=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.9))
    vae = _vae(2)
    full = ppvae.fit(vae, vae.guide, x, epochs=3, **kw)
    ck = tmp_path / "run.pt"
    vae = _vae(2)
    first = ppvae.fit(vae, vae.guide, x, epochs=2, checkpoint=ck, **kw)
    assert read_meta(ck).epoch == 2
    vae = _vae(7)  # different initial weights: everything must come from the checkpoint
    rest = ppvae.fit(vae, vae.guide, x, epochs=3, checkpoint=ck, resume=ck, **kw)
    assert first.train_objective == full.train_objective[:2]
    assert rest.train_objective == full.train_objective
    assert rest.valid_elbo == full.valid_elbo
    assert rest.steps == full.steps and read_meta(ck).epoch == 3


def test_resume_refuses_other_settings_and_takes_the_seed_it_was_run_with(tmp_path, digits):
    x = digits.train[:96]
    kw = dict(batch_size=32, quiet=True, device="cpu")
    vae = _vae(3)
    full = ppvae.fit(vae, vae.guide, x, epochs=3, seed=4, **kw)
    ck = tmp_path / "run.pt"
    vae = _vae(3)
    ppvae.fit(vae, vae.guide, x, epochs=2, seed=4, checkpoint=ck, **kw)
    vae = _vae(8)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    for other, diff in [({"batch_size": 16}, "batch_size x ranks 32 -> 16"),
                        ({"seed": 5}, "seed 4 -> 5"), ({"lr": 0.01}, "lr 0.001 -> 0.01"),
                        ({"objective": ppvae.IWAE(2)}, "objective 'elbo' -> 'iwae'"),
                        ({"x": x[:64]}, "num_data 96 -> 64")]:
        run = {**kw, "seed": 4, **other}
        with pytest.raises(ppvae.CheckpointError, match=f"written by a run with other settings "
                           rf"\({diff}\): resuming would not continue it"):
            ppvae.fit(vae, vae.guide, run.pop("x", x), epochs=3, resume=ck, **run)
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())  # untouched
    rest = ppvae.fit(vae, vae.guide, x, epochs=3, seed=None, resume=ck, **kw)  # seed 4, saved
    assert rest.train_objective == full.train_objective
    done = ppvae.fit(vae, vae.guide, x, epochs=2, seed=4, resume=ck, **kw)
    assert done.epochs == 2 and done.message == "trained 0 epochs"


def _assert_checkpoint_finite(path, epoch):
    meta = read_meta(path)
    assert meta.epoch == epoch
    vae = _vae(9)
    params = {n: p for n, p in _named_params(vae).items()}
    load_checkpoint(path, params=params, model=vae, restore_rng=False)
    assert all(torch.isfinite(p).all() for p in params.values())


def _named_params(vae):
    x = torch.zeros(2, 64)
    from ppvae.train.objectives import ELBO
    from ppvae.train.params import collect_params

    info = ppvae.check_pair(vae, vae.guide, x)
    return collect_params(lambda: ELBO().loss(vae, vae.guide, x, info=info))


@pytest.mark.parametrize("policy", ["stop", "rollback"])
def test_nan_in_data_stops_cleanly_and_keeps_a_finite_checkpoint(tmp_path, digits, policy):
    x = digits.train[:256].clone()
    ck = tmp_path / "nan.pt"
    vae = _vae(3)
    kw = dict(batch_size=32, quiet=True, device="cpu", checkpoint=ck, nan_policy=policy,
              max_rollbacks=1, check_every=2)  # windows of 2 steps: the rest of a bad epoch stands
    ppvae.fit(vae, vae.guide, x, epochs=1, **kw)
    x[200, 5] = float("nan")  # not in the first batch that the contract check sees
    r = ppvae.fit(vae, vae.guide, x, epochs=5, resume=ck, **kw)
    assert r.stopped == "non_finite", r
    # the NaN pixel enters the encoder first, so the guide's latent is the first bad site
    assert "step" in r.message and "guide site 'z'" in r.message, r.message
    assert "the data have non-finite values in batch rows" in r.message
    # "stop" ends in the first resumed epoch; "rollback" survives the bad row once (that epoch
    # completes and is checkpointed) and stops when it meets it again in the next epoch
    done = 1 if policy == "stop" else 2
    assert r.epochs == done and r.rollbacks == (0 if policy == "stop" else 1)
    assert all(math.isfinite(v) for v in r.train_objective)
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    _assert_checkpoint_finite(ck, done)


def test_poisoned_learning_rate_stops_naming_step_and_site(tmp_path, digits):
    vae = _vae(4)
    ck = tmp_path / "lr.pt"
    r = ppvae.fit(vae, vae.guide, digits.train[:256], epochs=2, batch_size=32, quiet=True,
                  device="cpu", checkpoint=ck, check_every=4,  # fit refuses lr=inf itself
                  optimizer=lambda ps: torch.optim.Adam(ps, lr=math.inf))
    assert r.stopped == "non_finite"
    # step 0's update (lr = inf) poisons the parameters; step 1's loss is the first non-finite
    assert "at step 1" in r.message and "diverged" in r.message, r.message
    assert "parameter 'vae_fit." in r.message
    assert not ck.exists()  # never a checkpoint of a non-finite state
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_rollback_recovers_after_a_transient_failure(digits):
    vae = _vae(5)
    r = ppvae.fit(vae, vae.guide, digits.train[:256], epochs=2, batch_size=32, lr=1e-3,
                  quiet=True, device="cpu", nan_policy="rollback", check_every=2,
                  optimizer=lambda ps: PoisonOnce(ps, at=3))
    assert r.stopped == "completed" and r.rollbacks == 1
    assert r.lr[-1] == pytest.approx(0.5e-3)
    assert all(math.isfinite(v) for v in r.train_objective)


class _RunningVAE(VAE):
    """A VAE with a running statistic of its decoder output in a buffer (as BatchNorm keeps)."""

    def __init__(self):
        super().__init__(64, 2, (16,))
        self.register_buffer("running", torch.zeros(()))

    def _likelihood(self, out):
        with torch.no_grad():
            self.running.mul_(0.9).add_(0.1 * out.mean())
        return super()._likelihood(out)


def test_a_non_finite_step_also_restores_module_buffers(digits):
    """The poisoned parameter makes the running statistic NaN at the next forward pass; the
    stop restores it with the parameters, to its value at the last finite check."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = _RunningVAE()
    r = ppvae.fit(vae, vae.guide, digits.train[:256], epochs=2, batch_size=32, lr=1e-3,
                  quiet=True, device="cpu", check_every=2,
                  optimizer=lambda ps: PoisonOnce(ps, at=3))
    assert r.stopped == "non_finite"
    assert torch.isfinite(vae.running) and float(vae.running) != 0.0
    assert all(torch.isfinite(p).all() for p in vae.parameters())


def test_early_stopping_and_restore_best(digits):
    vae = _vae(6)
    r = ppvae.fit(vae, vae.guide, digits.train[:128], valid=digits.valid[:64], epochs=30,
                  batch_size=128, lr=3e-2, patience=2, quiet=True, device="cpu")
    assert r.stopped in ("early_stopping", "completed")
    if r.stopped == "early_stopping":
        assert r.epochs < 30 and r.epochs - 1 - r.best_epoch == 2


def test_gradient_clipping_and_plateau_schedule(digits):
    vae = _vae(8)
    r = ppvae.fit(vae, vae.guide, digits.train[:128], valid=digits.valid[:64], epochs=2,
                  batch_size=64, clip_norm=1.0, schedule="plateau", quiet=True, device="cpu")
    assert r.stopped == "completed" and all(math.isfinite(v) for v in r.valid_elbo)


def test_a_numpy_array_trains_exactly_as_the_tensor(digits):
    runs = []
    for data in (digits.train[:96], digits.train[:96].numpy()):
        vae = _vae(9)
        runs.append(ppvae.fit(vae, vae.guide, data, valid=digits.valid[:32].numpy(), epochs=2,
                              batch_size=32, quiet=True, device="cpu", seed=5))
    assert runs[0].train_objective == runs[1].train_objective
    assert runs[0].valid_elbo == runs[1].valid_elbo


@pytest.mark.parametrize("kw, message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"epochs": 2.5}, "epochs must be an integer >= 0, got 2.5"),
    ({"check_every": 0}, "check_every must be an integer >= 1"),
    ({"valid_samples": 0}, "valid_samples must be an integer >= 1, got 0"),
    ({"patience": 0}, "patience must be an integer >= 1, got 0"),  # would stop after epoch 1
    ({"max_rollbacks": -1}, "max_rollbacks must be an integer >= 0"),
    ({"clip_norm": -1.0}, r"clip_norm must be a finite number > 0, got -1.0"),  # gradient ascent
    ({"clip_norm": math.nan}, "clip_norm must be a finite number > 0, got nan"),
    ({"rollback_lr_factor": 2.0}, r"rollback_lr_factor must be a finite number > 0 and <= 1.0"),
    ({"nan_policy": "ignore"}, "nan_policy must be 'stop' or 'rollback', got 'ignore'"),
])
def test_bad_settings_are_refused_by_name(digits, kw, message):
    vae = _vae()
    with pytest.raises(ValueError, match=message):
        ppvae.fit(vae, vae.guide, digits.train[:64], quiet=True, device="cpu", **kw)


def test_a_pyro_elbo_instance_trains_like_the_ppvae_elbo(digits):
    """Trace_ELBO() is taken as it is (wrapped): the same estimator and random draws as ELBO()."""
    runs = []
    for objective in (ppvae.ELBO(), pyro.infer.Trace_ELBO()):
        vae = _vae(10)
        runs.append(ppvae.fit(vae, vae.guide, digits.train[:96], valid=digits.valid[:32],
                              epochs=2, batch_size=32, quiet=True, device="cpu",
                              objective=objective))
    # the same random draws, so no Monte Carlo error: only float32 summation order differs
    # (measured 1 ulp, 1.1e-7 relative, on the training objective); bound: 8 float32 ulps
    tol = 8 * torch.finfo(torch.float32).eps
    torch.testing.assert_close(torch.tensor(runs[1].train_objective),
                               torch.tensor(runs[0].train_objective), rtol=tol, atol=0)
    torch.testing.assert_close(torch.tensor(runs[1].valid_elbo),
                               torch.tensor(runs[0].valid_elbo), rtol=tol, atol=0)
    vae = _vae()
    with pytest.raises(TypeError, match=r"the class Trace_ELBO: write Trace_ELBO\(\)"):
        ppvae.fit(vae, vae.guide, digits.train[:64], objective=pyro.infer.Trace_ELBO)
    with pytest.raises(TypeError, match=r"objective must be a ppvae objective .* got 'iwae'"):
        ppvae.fit(vae, vae.guide, digits.train[:64], objective="iwae")


def test_empty_data_and_wrong_dtype_are_named(digits):
    vae = _vae()
    with pytest.raises(ValueError, match=r"valid has no rows \(shape \(0, 64\)\)"):
        ppvae.fit(vae, vae.guide, digits.train[:64], valid=digits.valid[:0], quiet=True)
    with pytest.raises(TypeError, match="data must be a tensor or array"):
        ppvae.fit(vae, vae.guide, digits.train[:64].tolist(), quiet=True)
    with pytest.raises(ppvae.ContractError, match=r"valid \(validation data\): running the "
                       r"guide on x of shape \(16, 32\) failed: .* expects 64 features"):
        ppvae.fit(vae, vae.guide, digits.train[:64], valid=digits.valid[:16, :32], quiet=True)
    with pytest.raises(ppvae.ContractError,
                       match=r"x is torch.float64 but the guide's parameters are torch.float32"):
        ppvae.fit(vae, vae.guide, digits.train[:64].double(), quiet=True, device="cpu")


@pytest.fixture
def live_ctrl_c():
    """Ctrl-C as in a terminal: a shell that starts pytest in the background (``pytest &``)
    hands it SIGINT ignored, and then neither fit nor this test would ever see one."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_at_the_next_step_with_the_finished_epoch_saved(tmp_path, digits,
                                                                      live_ctrl_c):
    """SIGINT (Ctrl-C) is noted, not raised where it lands (inside torch.save or a finalizer it
    would be mangled or lost): fit raises KeyboardInterrupt at its next step boundary."""
    vae, ckpt, seen = _vae(10), tmp_path / "c.pt", []

    def on_epoch(epoch, **_):
        seen.append(epoch)
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)
            seen.append("went on")  # the handler only noted it

    with pytest.raises(KeyboardInterrupt):
        ppvae.fit(vae, vae.guide, digits.train[:64], epochs=5, batch_size=32, quiet=True,
                  device="cpu", checkpoint=ckpt, on_epoch=on_epoch)
    assert seen == [1, 2, "went on"] and read_meta(ckpt).epoch == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    def twice(epoch, **_):  # a second Ctrl-C raises at once
        os.kill(os.getpid(), signal.SIGINT)
        seen.append("first noted")
        os.kill(os.getpid(), signal.SIGINT)
        seen.append("not reached")

    with pytest.raises(KeyboardInterrupt):
        ppvae.fit(vae, vae.guide, digits.train[:64], epochs=5, batch_size=32, quiet=True,
                  device="cpu", on_epoch=twice)
    assert seen[3:] == ["first noted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_rank_seeds_suit_pyro_and_are_unchanged_where_they_worked():
    """Under torchrun each rank reseeds Pyro per epoch. NumPy's legacy seeding (inside
    pyro.set_rng_seed) takes seeds below 2**32 only; fit seeds above about 4294, and the random
    one drawn for seed=None (below 2**31), used to crash every rank at the first epoch."""
    from ppvae.train.world import rank_seed

    for seed in (0, 4, 4294, 5000, 2**31 - 1):
        for epoch, rank in ((0, 0), (7, 1), (99, 3)):
            s = rank_seed(seed, epoch, rank)
            pyro.set_rng_seed(s)
            before = (seed * 1_000_003 + epoch * 8191 + rank * 131_071 + 1) % 2**63
            assert s == before or before >= 2**32


def test_the_checkpoint_state_round_trips_through_the_typed_train_state(tmp_path, digits):
    """The checkpoint's ``state`` keeps the keys ppvae has always written (the CLI reads
    train / valid / lr from it), and TrainState reads back exactly what it wrote."""
    from ppvae.train.progress import TrainState

    vae, ck = _vae(11), tmp_path / "s.pt"
    r = ppvae.fit(vae, vae.guide, digits.train[:96], valid=digits.valid[:32], epochs=2,
                  batch_size=32, quiet=True, device="cpu", checkpoint=ck)
    meta = read_meta(ck)
    assert set(meta.state) == {"train", "valid", "lr", "best_epoch", "best", "bad_epochs",
                               "rollbacks", "step"}
    assert meta.state["train"] == r.train_objective and meta.state["step"] == r.steps
    state = TrainState.from_checkpoint(meta)
    assert state.epoch == 2 and state.best.epoch == r.best_epoch
    assert state.to_checkpoint() == meta.state
    old = TrainState.from_checkpoint(meta._replace(state={"train": [-1.0], "step": 3}))
    assert old.step == 3 and old.best.value == -math.inf and old.history.valid == []


def test_fit_result_prints_one_line_and_its_history_is_a_dataframe(digits):
    vae = _vae(6)
    r = ppvae.fit(vae, vae.guide, digits.train[:128], valid=digits.valid[:64], epochs=3,
                  batch_size=32, progress=False, device="cpu")
    df = r.to_dataframe()
    assert list(df.columns) == ["epoch", "train", "valid", "lr"] and len(df) == 3
    assert df["epoch"].tolist() == [0, 1, 2]
    assert df["train"].tolist() == r.train_objective and df["valid"].tolist() == r.valid_elbo
    assert df["lr"].tolist() == r.lr
    text = repr(r)
    assert "\n" not in text and text.startswith("FitResult(completed; 3 epochs, 12 steps")
    assert f"valid {r.valid_elbo[-1]:.4f}" in text and f"best epoch {r.best_epoch}" in text
    no_valid = ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, batch_size=32,
                         progress=False, device="cpu").to_dataframe()
    assert no_valid["valid"].isna().all() and len(no_valid) == 1
    vae = _vae(4)
    bad = ppvae.fit(vae, vae.guide, digits.train[:64], epochs=1, batch_size=32, progress=False,
                    device="cpu", optimizer=lambda ps: torch.optim.Adam(ps, lr=math.inf))
    assert repr(bad).startswith("FitResult(non_finite: non-finite") and "\n" not in repr(bad)
    assert len(repr(bad)) < 300  # the message is cut; FitResult.message keeps it whole


def _pyro_module_vae(d: int, k: int):
    """A Pyro-examples style pair: modules registered with pyro.module under fixed names."""
    import pyro.distributions as dist

    dec, enc = torch.nn.Linear(k, d), torch.nn.Linear(d, 2 * k)

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, enc, dec


def test_a_second_pair_with_the_same_module_names_trains_its_own_modules():
    # a notebook trains one model, then another whose pyro.module names are the same: the
    # parameter store still holds the first pair's tensors under those names, and plain Pyro
    # would optimize them (gradient-free) while the new modules stay at their initial values
    x = (torch.rand(200, 10) > 0.5).float()
    m1, g1, _, _ = _pyro_module_vae(10, 2)
    ppvae.fit(m1, g1, x, epochs=2, progress=False)
    m2, g2, enc2, dec2 = _pyro_module_vae(10, 4)
    before = [p.detach().clone() for p in (*enc2.parameters(), *dec2.parameters())]
    res = ppvae.fit(m2, g2, x, epochs=3, progress=False)
    after = list(enc2.parameters()) + list(dec2.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert pyro.get_param_store()["encoder$$$weight"] is enc2.weight
    assert res.train_objective[-1] > res.train_objective[0]
