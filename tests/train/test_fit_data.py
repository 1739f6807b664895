"""fit's data forms (issue 15): torch Datasets fetched by index from fit's seeded permutation
(so they train exactly as the same tensors do, and resume), DataLoaders streamed, items as
tensors, tuples named by batch_kw or dicts, validation data in the same forms, and errors that
name the problem."""

import pyro
import pytest
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import ppvae
from ppvae import guides, models


def _cvae(seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return (models.CVAE(64, 10, 2, (16,), name="cvae_data"),
            guides.ConditionalEncoder(64, 10, 2, (16,), name="cvae_data_q"))


class Records(Dataset):
    """A map-style dataset of dict records (an image under "image", its label under "y"),
    counting how its items are fetched."""

    def __init__(self, x, y, batched=False):
        self.x, self.y, self.calls = x, y, {"getitem": 0, "getitems": 0}
        if batched:
            self.__getitems__ = self._getitems

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.calls["getitem"] += 1
        return {"image": self.x[i], "y": self.y[i]}

    def _getitems(self, idx):
        self.calls["getitems"] += 1
        return [{"image": self.x[i], "y": self.y[i]} for i in idx]


KW = dict(epochs=2, batch_size=32, quiet=True, device="cpu", seed=4)


def _run(data, **kw):
    model, guide = _cvae()
    return ppvae.fit(model, guide, data, **{**KW, **kw})


def test_datasets_train_exactly_as_the_same_tensors(digits):
    """A TensorDataset, and a map-style Dataset of dict records fetched item by item or with
    __getitems__, take the same rows of the same seeded permutation as tensor data: the same
    training values, validation ELBOs and parameters, bit for bit (100 rows = 3 x 32 + 4)."""
    x, y = digits.train[:100], digits.train_labels[:100]
    vx, vy = digits.valid[:40], digits.valid_labels[:40]
    runs = {
        "tensors": _run(x, batch_kw={"y": y}, valid=vx, valid_batch_kw={"y": vy}),
        "TensorDataset": _run(TensorDataset(x, y), batch_kw=("y",),
                              valid=TensorDataset(vx, vy)),
        "records": _run(Records(x, y), data_key="image", valid=Records(vx, vy)),
    }
    batched = Records(x, y, batched=True)
    runs["__getitems__"] = _run(batched, data_key="image", valid=Records(vx, vy, batched=True))
    assert batched.calls == {"getitem": 0, "getitems": 1 + 2 * 4}  # the probe, 4 per epoch
    for name, r in runs.items():
        assert r.train_objective == runs["tensors"].train_objective, name
        assert r.valid_elbo == runs["tensors"].valid_elbo, name


def test_a_dataloader_is_streamed_reproducibly_and_resumes(tmp_path, digits):
    """The loader decides the batches (batch_size is its own) and their order (shuffling draws
    from torch's generator, which fit seeds and a checkpoint restores)."""
    x, y = digits.train[:100], digits.train_labels[:100]
    loader = DataLoader(TensorDataset(x, y), batch_size=25, shuffle=True)
    kw = dict(batch_kw=("y",), valid=DataLoader(TensorDataset(digits.valid[:20],
                                                              digits.valid_labels[:20]),
                                                batch_size=8))  # its items named as x's
    full = _run(loader, **{**kw, "epochs": 3})
    assert full.stopped == "completed" and full.steps == 3 * 4
    assert _run(loader, **{**kw, "epochs": 3}).train_objective == full.train_objective
    ck = tmp_path / "stream.pt"
    _run(loader, **{**kw, "epochs": 2, "checkpoint": ck})
    rest = _run(loader, **{**kw, "epochs": 3, "checkpoint": ck, "resume": ck})
    assert rest.train_objective == full.train_objective and rest.valid_elbo == full.valid_elbo
    other = DataLoader(TensorDataset(x, y), batch_size=25, shuffle=False)
    assert _run(other, **{**kw, "epochs": 3}).train_objective != full.train_objective


class Stream(IterableDataset):
    def __iter__(self):
        return iter([])


@pytest.mark.parametrize("data, kw, error, message", [
    (lambda d: DataLoader(TensorDataset(d.train[:64], d.train_labels[:64], d.train_labels[:64]),
                          batch_size=32), {"batch_kw": ("y",)}, ValueError,
     r"DataLoader batch 0 \(data\) is a list of 3 items but batch_kw names 1 \(\['y'\]\): name "
     r"the 2 item\(s\) after x"),
    (lambda d: Records(d.train[:64], d.train_labels[:64]), {}, ValueError,
     r"Dataset items \[0, 1, 2\]... \(data\) is a dict without the data key 'x' \(keys "
     r"\['image', 'y'\]\): say which key holds x with data_key="),
    (lambda d: TensorDataset(d.train[:64], d.train_labels[:64]), {"batch_kw": {"y": None}},
     TypeError, r"batch_kw=\{...\} holds per-datapoint tensors for tensor data; with a torch "
                r"Dataset or DataLoader, batch_kw names the elements after x"),
    (lambda d: d.train[:64], {"batch_kw": ("y",)}, TypeError,
     r"batch_kw=\('y',\) names the elements of Dataset / DataLoader items; with tensor data "
     r"pass the tensors"),
    (lambda d: TensorDataset(d.train[:64], d.train_labels[:64]), {}, ValueError,
     r"data is a TensorDataset of 2 tensors but batch_kw names 0"),
    (lambda d: Stream(), {}, TypeError, "data is an IterableDataset: wrap it in a DataLoader"),
    (lambda d: TensorDataset(d.train[:64]), {"transform": lambda x, g: x}, ValueError,
     "transform= applies to tensor data"),
    (lambda d: [[0.0] * 64], {}, TypeError, "data must be a tensor or array"),
])
def test_data_problems_are_named(digits, data, kw, error, message):
    model, guide = _cvae()
    with pytest.raises(error, match=message):
        ppvae.fit(model, guide, data(digits), epochs=1, quiet=True, device="cpu", **kw)


def test_tuple_items_name_their_labels_for_an_unconditional_model_too(digits):
    """A DataLoader of (x,) one-tuples (TensorDataset(x)) trains an unconditional VAE."""
    pyro.clear_param_store()
    vae = models.VAE(64, 2, (16,), name="vae_data")
    r = ppvae.fit(vae, vae.guide, DataLoader(TensorDataset(digits.train[:64]), batch_size=16),
                  epochs=1, quiet=True, device="cpu")
    assert r.steps == 4 and r.stopped == "completed"
