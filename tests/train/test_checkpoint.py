"""Checkpoints: round trip, atomic writes, refusal of non-finite states, clear load errors."""

import json

import pytest
import torch

import ppvae
from ppvae.models import VAE
from ppvae.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from ppvae.train.objectives import ELBO
from ppvae.train.params import collect_params


def _setup(name="ck_vae", hidden=(8,)):
    vae = VAE(6, 2, hidden, name=name)
    x = torch.bernoulli(torch.full((4, 6), 0.4))
    info = ppvae.check_pair(vae, vae.guide, x)
    params = collect_params(lambda: ELBO().loss(vae, vae.guide, x, info=info))
    opt = torch.optim.Adam(list(params.values()), lr=1e-2)
    loss = ELBO().loss(vae, vae.guide, x, info=info)
    loss.backward()
    opt.step()
    return vae, params, opt


def _save(path, vae, params, opt, epoch=3):
    return save_checkpoint(path, params=params, model=vae, guide=vae.guide, optimizer=opt,
                           epoch=epoch, step=30, config={"lr": 0.01}, state={"train": [-1.5]})


def test_round_trip_restores_parameters_optimizer_and_metadata(tmp_path):
    vae, params, opt = _setup()
    path = _save(tmp_path / "a.pt", vae, params, opt)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left behind
    saved = {k: v.detach().clone() for k, v in params.items()}
    saved_opt = opt.state_dict()["state"][0]["exp_avg"].clone()
    with torch.no_grad():
        for p in params.values():
            p.add_(1.0)
    opt.state[next(iter(params.values()))]["exp_avg"].zero_()
    meta = load_checkpoint(path, params=params, model=vae, guide=vae.guide, optimizer=opt)
    assert all(torch.equal(params[k], saved[k]) for k in params)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], saved_opt)
    assert meta.epoch == 3 and meta.step == 30 and meta.config == {"lr": 0.01}
    assert meta.state == {"train": [-1.5]}
    assert set(meta.versions) == {"ppvae", "pyro", "torch"}
    assert meta.versions["ppvae"] == ppvae.__version__
    assert read_meta(path) == meta
    raw = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert json.loads(raw["meta_json"])["epoch"] == 3


def test_non_finite_parameters_are_never_written(tmp_path):
    vae, params, opt = _setup()
    path = _save(tmp_path / "a.pt", vae, params, opt, epoch=1)
    with torch.no_grad():
        next(iter(params.values())).view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match=r"refusing to write .* is not finite"):
        _save(path, vae, params, opt, epoch=2)
    assert read_meta(path).epoch == 1 and len(list(tmp_path.iterdir())) == 1


def test_corrupt_foreign_and_unsafe_files_get_clear_errors(tmp_path):
    vae, params, opt = _setup()
    good = _save(tmp_path / "good.pt", vae, params, opt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: not a readable ppvae checkpoint"):
        read_meta(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a ppvae checkpoint"):
        read_meta(foreign)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "ppvae-checkpoint", "obj": _Arbitrary()}, unsafe)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_meta(unsafe)
    newer = tmp_path / "newer.pt"
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, newer)
    with pytest.raises(CheckpointError, match="format version 99 is not supported"):
        read_meta(newer)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_meta(tmp_path / "missing.pt")


class _Arbitrary:
    """An object that weights_only loading must refuse to unpickle."""


def test_incompatible_model_is_named(tmp_path):
    vae, params, opt = _setup("ck_small", (8,))
    path = _save(tmp_path / "a.pt", vae, params, opt)
    _, other_params, _ = _setup("ck_small_b", (8,))
    with pytest.raises(CheckpointError, match="parameters do not match"):
        load_checkpoint(path, params=other_params)
    big, big_params, _ = _setup("ck_big", (9,))
    renamed = {k.replace("ck_big", "ck_small"): v for k, v in big_params.items()}
    with pytest.raises(CheckpointError, match=r"has shape \(8, 6\) in the checkpoint but \(9, 6\)"):
        load_checkpoint(path, params=renamed)
    before = {k: v.clone() for k, v in big.state_dict().items()}
    with pytest.raises(CheckpointError, match="has shape"):  # some entries have equal shapes,
        load_checkpoint(path, params=renamed, model=big, guide=big.guide)  # e.g. output biases
    assert all(torch.equal(v, before[k]) for k, v in big.state_dict().items())  # none copied
