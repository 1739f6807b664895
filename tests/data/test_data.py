"""ppvae.data: each loader reads data the test wrote (offline) and rejects malformed files."""

import struct

import numpy as np
import pytest
import torch

from ppvae.data import Dataset, load_dataset
from ppvae.data.binarized_mnist import load_binarized_mnist


def test_digits_splits_labels_and_binarization():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset) and ds.image_shape == (8, 8) and ds.data_dim == 64
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1297, 200, 300)
    assert ds.train.dtype == torch.float32 and 0 <= ds.train.min() and ds.train.max() <= 1
    assert ds.train_labels.dtype == torch.int64 and set(ds.test_labels.tolist()) == set(range(10))
    b = load_dataset("digits", binarize="static", seed=1)
    assert set(b.train.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b.train, load_dataset("digits", binarize="static", seed=1).train)
    d = load_dataset("digits", binarize="dynamic")
    assert d.binarization == "dynamic" and torch.equal(d.train, ds.train)  # grey for training
    assert set(d.valid.unique().tolist()) <= {0.0, 1.0}  # evaluation sets fixed


def _write_idx(path, arr):
    """Write an IDX file (big-endian header, uint8 payload), the format torchvision reads."""
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + arr.tobytes())


def _write_mnist(root, folder, n_train=24, n_test=6, side=28):
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, side, side)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return raw


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_sets_read_idx_files_offline(tmp_path, name, folder):
    _write_mnist(tmp_path, folder)
    ds = load_dataset(name, root=tmp_path, download=False)
    assert ds.image_shape == (28, 28) and ds.data_dim == 784
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (20, 4, 6)
    assert 0 <= ds.train.min() and ds.train.max() <= 1 and len(ds.train_labels) == 20
    dyn = load_dataset(name, root=tmp_path, download=False, binarize="dynamic")
    assert torch.equal(dyn.train, ds.train) and set(dyn.test.unique().tolist()) <= {0.0, 1.0}


def test_torchvision_rejects_malformed_and_missing(tmp_path):
    raw = _write_mnist(tmp_path, "MNIST")
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x09garbage")
    with pytest.raises(ValueError, match="malformed"):
        load_dataset("mnist", root=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_dataset("fashion-mnist", root=tmp_path / "empty", download=False)


def _amat_rows(n, rng):
    return rng.integers(0, 2, (n, 784))


def test_binarized_mnist_reads_amat_and_npz(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {s: _amat_rows(n, rng) for s, n in (("train", 5), ("valid", 3), ("test", 2))}
    for s, a in arrays.items():
        text = "\n".join(" ".join(map(str, row)) for row in a) + "\n"
        (tmp_path / f"binarized_mnist_{s}.amat").write_text(text)
    ds = load_dataset("binarized-mnist", path=tmp_path, download=False)
    assert torch.equal(ds.train, torch.as_tensor(arrays["train"], dtype=torch.float32))
    assert ds.valid.shape == (3, 784) and ds.test_labels is None and ds.binarization == "static"
    np.savez(tmp_path / "bm.npz", **{s: a.astype(np.uint8) for s, a in arrays.items()})
    dz = load_dataset("binarized-mnist", path=tmp_path / "bm.npz")
    assert torch.equal(dz.test, ds.test)


def test_binarized_mnist_rejects_malformed_files(tmp_path):
    (tmp_path / "binarized_mnist_train.amat").write_text("0 1 0\n")
    for s in ("valid", "test"):
        (tmp_path / f"binarized_mnist_{s}.amat").write_text(" ".join(["0"] * 784) + "\n")
    with pytest.raises(ValueError, match=r"binarized_mnist_train.amat, line 1: expected 784"):
        load_dataset("binarized-mnist", path=tmp_path, download=False)
    (tmp_path / "binarized_mnist_train.amat").write_text(" ".join(["2"] * 784) + "\n")
    with pytest.raises(ValueError, match="values must be 0 or 1"):
        load_dataset("binarized-mnist", path=tmp_path, download=False)
    np.savez(tmp_path / "bad.npz", train=np.zeros((2, 784), np.uint8))
    with pytest.raises(ValueError, match=r"missing arrays \['valid', 'test'\]"):
        load_dataset("binarized-mnist", path=tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"not a readable \.npz"):
        load_dataset("binarized-mnist", path=tmp_path / "junk.npz")


def test_binarized_mnist_downloads_missing_files_and_fails_clearly_offline(tmp_path):
    src = tmp_path / "mirror"
    src.mkdir()
    rng = np.random.default_rng(2)
    for s in ("train", "valid", "test"):
        rows = _amat_rows(2, rng)
        (src / f"binarized_mnist_{s}.amat").write_text(
            "\n".join(" ".join(map(str, r)) for r in rows) + "\n")
    dest = tmp_path / "dest"
    out = load_binarized_mnist(dest, root=tmp_path, base_url=src.as_uri() + "/")
    assert [a.shape for a in out] == [(2, 784)] * 3
    assert (dest / "binarized_mnist_test.amat").is_file()
    with pytest.raises(RuntimeError, match=r"could not download .* offline"):
        load_binarized_mnist(tmp_path / "other", root=tmp_path,
                             base_url=(tmp_path / "nowhere").as_uri() + "/")


def test_ppca_and_unknown_names():
    ds = load_dataset("ppca", num_data=100, data_dim=6, latent_dim=2)
    assert ds.train.shape == (80, 6) and ds.valid.shape == (10, 6) and ds.train_labels is None
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="real-valued"):
        load_dataset("ppca", binarize="static")
