"""Users' own data: folders of images (class subfolders or flat), CSV files with and without a
header row, torch Datasets, the likelihood chosen for them, and failed downloads that leave
nothing behind."""

import json
import tomllib
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from ppvae.app.cli import main
from ppvae.app.inputs import build_data, load_data, train_config
from ppvae.app.zoo import BuildError, resolve_likelihood
from ppvae.data import from_torch_dataset, load_image_folder, load_table, read_table

TINY = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--quiet"]


def _grey(rng, h=8, w=8):
    return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")


@pytest.fixture
def class_folder(tmp_path):
    """Two classes of 8 x 8 grey PNGs, 7 each, plus things a folder of images really holds."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(7):
            _grey(rng).save(root / c / f"{c}{i}.png")
        (root / c / "notes.txt").write_text("not an image")
        (root / c / "._cat0.png").write_bytes(b"macOS resource fork")  # hidden: ignored
    (root / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    return root


def test_train_on_a_folder_of_class_subfolders(class_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(class_folder), "--out", str(out), *TINY]) == 0
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["data"] == str(class_folder) and cfg["binarize"] == "static"
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] \
        == [1]
    data = build_data(str(class_folder), binarize="static")
    assert data.image_shape == (8, 8) and data.classes == ("cat", "dog")
    assert data.train.shape[1] == 64 and set(data.train.unique().tolist()) <= {0.0, 1.0}
    labels = torch.cat([data.train_labels, data.valid_labels, data.test_labels])
    assert sorted(labels.tolist()) == [0] * 7 + [1] * 7
    assert main(["sample", str(out), "--num", "4"]) == 0  # drawn as 8 x 8 images
    # the labels reach a conditional model
    assert main(["train", "--model", "cvae", "--data", str(class_folder), "--out",
                 str(tmp_path / "cvae"), *TINY]) == 0
    capsys.readouterr()


def test_a_flat_folder_in_colour_grey_and_resized(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8), "RGB").save(
            root / f"p{i}.PNG")  # the suffix in any case
    grey_rgb = np.repeat(rng.integers(0, 256, (6, 4, 1), dtype=np.uint8), 3, axis=2)
    Image.fromarray(grey_rgb, "RGB").save(root / "p5.png")
    ds = load_image_folder(root)
    assert ds.image_shape == (3, 6, 4) and ds.data_dim == 72 and ds.train_labels is None
    assert 0 <= float(ds.train.min()) and float(ds.train.max()) <= 1
    grey = load_image_folder(root, mode="L")
    assert grey.image_shape == (6, 4)
    # luma of the image stored as RGB with equal channels is its grey level
    x = np.asarray(Image.open(root / "p5.png").convert("L"), dtype=np.float32).ravel() / 255
    rows = torch.cat([grey.train, grey.valid, grey.test]).numpy()
    assert np.abs(rows - x).max(axis=1).min() < 1e-2
    small = load_image_folder(root, size=(3, 2))
    assert small.image_shape == (3, 3, 2)
    only_grey = tmp_path / "grey"
    only_grey.mkdir()
    for i in range(3):  # stored as RGB, but every channel equal: read as one grey channel
        Image.fromarray(grey_rgb, "RGB").save(only_grey / f"g{i}.png")
    assert load_image_folder(only_grey).image_shape == (6, 4)


def test_images_of_different_sizes_are_named_and_resized_on_request(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(4):
        _grey(rng).save(root / f"a{i}.png")
    _grey(rng, 10, 7).save(root / "odd.png")
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "a0.png is 8 x 8 (height x width)" in err and "odd.png is 10 x 7" in err
    assert "--image-size H W" in err and "size=" not in err
    assert not (tmp_path / "r").exists()
    cfg, _ = train_config(_args(["--data", str(root), "--image-size", "8", "8"]))
    assert cfg["image_size"] == [8, 8]
    data = load_data(cfg)
    assert data.image_shape == (8, 8) and data.train.shape[0] + data.valid.shape[0] \
        + data.test.shape[0] == 5
    assert cfg["image_mode"] == "L"  # recorded, so config.toml keeps it


def _args(argv):
    from ppvae.app.cli import _parser

    return _parser().parse_args(["train", *argv])


def test_train_records_the_likelihood_and_image_options_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(3)
    root = tmp_path / "mixed"
    root.mkdir()
    for i, (h, w) in enumerate([(8, 8), (8, 8), (9, 8), (8, 7)]):
        _grey(rng, h, w).save(root / f"m{i}.png")
    out = tmp_path / "img"
    assert main(["train", "--data", str(root), "--image-size", "8", "8", "--out", str(out),
                 *TINY]) == 0
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["likelihood"] == "bernoulli" and cfg["image_mode"] == "L"
    csv = tmp_path / "real.csv"
    np.savetxt(csv, rng.normal(size=(30, 4)), delimiter=",", header="a,b,c,d", comments="")
    out = tmp_path / "csv"
    assert main(["train", "--data", str(csv), "--out", str(out), *TINY]) == 0
    assert tomllib.loads((out / "config.toml").read_text())["likelihood"] == "gaussian"
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    # checked against the data, before anything is written
    for argv, message in [
        (["--data", str(csv), "--image-shape", "2", "3"],
         "--image-shape (2, 3) has 6 values per image but real.csv has 4 per row"),
        (["--binarize", "none", "--likelihood", "bernoulli"],
         "the bernoulli likelihood needs 0/1 data; digits has values in [0, 1]"),
        (["--data", str(csv), "--likelihood", "continuous-bernoulli"],
         "the continuous-bernoulli likelihood needs values in [0, 1]"),
        (["--data", str(csv), "--model", "cvae"], "needs 0/1 data; real.csv has values in"),
    ]:
        assert main(["train", "--out", str(tmp_path / "no"), *argv, *TINY]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "no").exists()


def test_csv_with_and_without_a_header_row(tmp_path, capsys):
    rng = np.random.default_rng(4)
    x = rng.random((30, 4))
    plain, named = tmp_path / "plain.csv", tmp_path / "named.csv"
    np.savetxt(plain, x, delimiter=",")
    np.savetxt(named, x, delimiter=",", header="f0,f1,f2,f3", comments="")
    a, b = read_table(plain), read_table(named)
    assert a.columns is None and b.columns == ("f0", "f1", "f2", "f3")
    assert np.array_equal(a.values, b.values) and a.values.shape == (30, 4)
    ds = load_table(named)
    assert ds.columns == ("f0", "f1", "f2", "f3") and ds.train.shape == (24, 4)
    for path in (plain, named):  # real values in [0, 1]: the VAE gets a Gaussian likelihood
        out = tmp_path / path.stem
        assert main(["train", "--data", str(path), "--out", str(out), *TINY]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("f0,f1\n0.1,0.2\n0.3,oops\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "b"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "bad.csv, line 3, column 2 ('f1'): 'oops' is not a number" in err


def test_image_shape_of_a_table_and_its_check(tmp_path):
    x = np.random.default_rng(5).random((12, 6))
    path = tmp_path / "rows.npy"
    np.save(path, x)
    assert load_table(path, image_shape=(2, 3)).image_shape == (2, 3)
    assert load_table(path, image_shape=(1, 2, 3)).image_shape == (2, 3)  # one channel
    cfg, _ = train_config(_args(["--data", str(path), "--image-shape", "3", "2"]))
    assert load_data(cfg).image_shape == (3, 2)
    cfg, _ = train_config(_args(["--data", str(path), "--image-shape", "4", "2"]))
    with pytest.raises(BuildError, match=r"--image-shape \(4, 2\) has 8 values per image but "
                       "rows.npy has 6 per row"):
        load_data(cfg)
    with pytest.raises(ValueError, match="--image-size applies to a folder of images"):
        train_config(_args(["--data", str(path), "--image-size", "2", "3"]))
    with pytest.raises(ValueError, match=r"--image-shape applies to a \.npy / \.csv / \.txt file"):
        train_config(_args(["--image-shape", "8", "8"]))


def test_the_likelihood_follows_the_data_and_is_checked():
    digits = build_data("digits", binarize="static")
    grey = build_data("digits")
    cfg = {"model": "vae"}
    assert resolve_likelihood(cfg, digits) == "bernoulli" and cfg["likelihood"] == "bernoulli"
    cfg = {"model": "vae"}
    assert resolve_likelihood(cfg, grey) == "gaussian" and cfg["likelihood"] == "gaussian"
    cfg = {"model": "vae", "likelihood": "continuous-bernoulli"}
    assert resolve_likelihood(cfg, grey) == "continuous-bernoulli"  # kept, not re-guessed
    with pytest.raises(BuildError, match="needs 0/1 data; digits has values in"):
        resolve_likelihood({"model": "vae", "likelihood": "bernoulli"}, grey)
    with pytest.raises(BuildError, match="--binarize static"):
        resolve_likelihood({"model": "cvae"}, grey)
    with pytest.raises(ValueError, match="model 'cvae' has only bernoulli; use model 'vae'"):
        train_config(_args(["--model", "cvae", "--likelihood", "gaussian"]))
    cfg, _ = train_config(_args(["--likelihood", "gaussian"]))
    assert "binarize" not in cfg  # grey levels kept for a Gaussian likelihood
    cfg, _ = train_config(_args([]))
    assert cfg["binarize"] == "static"


def test_a_grey_level_vae_with_the_continuous_bernoulli_likelihood():
    from ppvae.app.zoo import DataShape, ModelSpec, build_model

    model = build_model("vae", ModelSpec(latent_dim=2, hidden=(8,)), DataShape(64, (8, 8)),
                        likelihood="continuous-bernoulli")
    assert model.likelihood == "continuous_bernoulli"


def test_any_torch_dataset_becomes_a_dataset_record():
    x = torch.rand(20, 1, 4, 4)
    y = torch.arange(20) % 3
    ds = from_torch_dataset(torch.utils.data.TensorDataset(x, y), binarize="dynamic", seed=1)
    assert ds.name == "TensorDataset" and ds.image_shape == (4, 4) and ds.data_dim == 16
    assert ds.binarization == "dynamic" and set(ds.valid.unique().tolist()) <= {0.0, 1.0}
    assert sorted(torch.cat([ds.train_labels, ds.valid_labels, ds.test_labels]).tolist()) \
        == sorted(y.tolist())

    class Pictures(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": Image.fromarray(np.full((3, 5), 51 * i, dtype=np.uint8), "L")}

    pics = from_torch_dataset(Pictures())
    assert pics.image_shape == (3, 5)  # a grey PIL image: one channel, H x W
    values = sorted(torch.cat([pics.train, pics.valid, pics.test])[:, 0].tolist())
    assert values == pytest.approx([0.0, 0.2, 0.4, 0.6])

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from (torch.full((2,), i / 5) for i in range(5))

    stream = from_torch_dataset(Stream())
    assert stream.train.shape == (3, 2) and stream.image_shape is None

    class Ragged(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(2 + (i == 2))

    with pytest.raises(ValueError, match=r"item 2 has shape \(3,\), item 0 \(2,\)"):
        from_torch_dataset(Ragged())


@pytest.mark.parametrize("name", ["binarized-mnist", "mnist"])
def test_a_failed_download_leaves_no_directory(tmp_path, monkeypatch, capsys, name):
    def offline(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("PPVAE_DATA", str(tmp_path / "data"))
    out = tmp_path / "runs" / "new"
    assert main(["train", "--data", name, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "offline?" in err
    if name == "binarized-mnist":
        assert "--data-path" in err and "path=" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
