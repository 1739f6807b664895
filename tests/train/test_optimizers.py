"""fit's optimizer= (issue 15): a factory, a torch.optim class, a pyro.optim optimizer (per-
parameter arguments included) or a pyro.optim scheduler; each trains and resumes exactly."""

import pyro
import pyro.optim
import pytest
import torch

import ppvae
from ppvae.models import VAE
from ppvae.train.settings import make_optimizer


def _vae(seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return VAE(64, 4, (16,), name="vae_opt")


def _per_parameter(name):  # Pyro's one-argument form: the parameter's dotted name
    return {"lr": 2e-3 if ".decoder." in f".{name}" else 1e-3}


OPTIMIZERS = {
    "factory": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "class": torch.optim.SGD,
    "pyro-adam": pyro.optim.Adam({"lr": 1e-3}),
    "pyro-clipped-adam": pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 5.0, "lrd": 0.999}),
    "pyro-per-parameter": pyro.optim.Adam(_per_parameter),
    "pyro-scheduler": pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam,
                                                "optim_args": {"lr": 1e-2}, "gamma": 0.5}),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_form_trains_and_resumes_exactly(tmp_path, digits, name):
    x = digits.train[:96]
    kw = dict(batch_size=32, quiet=True, device="cpu", seed=2, optimizer=OPTIMIZERS[name])
    full = ppvae.fit(*_pair(1), x, epochs=3, **kw)
    ck = tmp_path / "run.pt"
    ppvae.fit(*_pair(1), x, epochs=2, checkpoint=ck, **kw)
    rest = ppvae.fit(*_pair(5), x, epochs=3, checkpoint=ck, resume=ck, **kw)
    assert full.stopped == "completed" and full.steps == 9
    assert rest.train_objective == full.train_objective and rest.lr == full.lr
    if name == "pyro-scheduler":  # stepped per epoch
        assert full.lr == pytest.approx([1e-2, 5e-3, 2.5e-3])


def _pair(seed):
    vae = _vae(seed)
    return vae, vae.guide


def test_a_pyro_adam_trains_exactly_as_the_default_adam(digits):
    runs = [ppvae.fit(*_pair(3), digits.train[:64], epochs=2, batch_size=32, quiet=True,
                      device="cpu", optimizer=opt).train_objective
            for opt in (None, pyro.optim.Adam({"lr": 1e-3}), torch.optim.Adam)]
    assert runs[0] == runs[1] == runs[2]


def test_per_parameter_arguments_become_parameter_groups():
    params = {"vae_opt$$$decoder.0.weight": torch.zeros(2, requires_grad=True),
              "vae_opt$$$encoder.0.weight": torch.zeros(2, requires_grad=True),
              "loose": torch.zeros(1, requires_grad=True)}
    opt, sched, lr = make_optimizer(params, pyro.optim.Adam(_per_parameter), 1e-3)
    assert sched is None and lr == 2e-3  # the first group's, as a checkpoint records it
    assert sorted((g["lr"], len(g["params"])) for g in opt.param_groups) == [(1e-3, 2),
                                                                              (2e-3, 1)]

    def two_args(module, param):  # Pyro's older two-argument form
        return {"lr": 0.5 if module == "vae_opt" else 0.1}

    opt, _, _ = make_optimizer(params, pyro.optim.SGD(two_args), 1e-3)
    assert sorted(g["lr"] for g in opt.param_groups) == [0.1, 0.5]
    with pytest.raises(TypeError, match="per-parameter optim_args returned None for parameter"):
        make_optimizer(params, pyro.optim.Adam(lambda name: None), 1e-3)


@pytest.mark.parametrize("kw, error, message", [
    ({"optimizer": "adam"}, TypeError, r"optimizer must be None \(Adam with lr\), a "
                                       r"torch.optim.Optimizer subclass .* got 'adam'"),
    ({"optimizer": pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {},
                                              "gamma": 0.9}), "schedule": "cosine"},
     ValueError, "brings its own learning-rate schedule; do not also pass schedule='cosine'"),
    ({"optimizer": pyro.optim.Adam({"lr": 1e-3}, {"clip_norm": 1.0})}, ValueError,
     r"has clip_args \{'clip_norm': 1.0\}: fit clips gradients itself, pass clip_norm="),
    ({"optimizer": lambda ps: None}, TypeError, "returned NoneType, not a torch.optim.Optimizer"),
])
def test_what_optimizer_does_not_accept_is_named(digits, kw, error, message):
    with pytest.raises(error, match=message):
        ppvae.fit(*_pair(0), digits.train[:32], epochs=1, quiet=True, device="cpu", **kw)
    instance = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(TypeError, match="optimizer must be"):
        ppvae.fit(*_pair(0), digits.train[:32], epochs=1, quiet=True, device="cpu",
                  optimizer=instance)
