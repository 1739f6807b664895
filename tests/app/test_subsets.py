"""Subsets of a split's rows (issue 16): ``--num-data`` picks a seeded random subset, not the first
N rows of a split that may be stored in class order; labels follow the rows; the report records
the indices. The end-to-end test goes through the CLI's real binarized-MNIST path with a small
class-ordered ``.npz`` whose rows say which class they are."""

import json

import numpy as np
import pytest
import torch

from ppvae.app.cli import main
from ppvae.app.trained import Rows, label_kw, select_rows
from ppvae.data import Dataset

NUM_CLASSES, PER_CLASS, BLOCK = 10, 20, 78  # class c: pixels [78 c, 78 c + 78) mostly on


def test_select_rows_is_a_sorted_seeded_random_subset():
    a = select_rows(1000, 30, seed=3)
    assert a.dtype == torch.int64 and a.shape == (30,)
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == 30
    assert torch.equal(a, select_rows(1000, 30, seed=3))  # reproducible
    assert not torch.equal(a, select_rows(1000, 30, seed=4))
    assert int(a.max()) > 500  # not the first rows
    state = torch.get_rng_state()
    select_rows(1000, 30, seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_select_rows_first_all_and_errors():
    assert select_rows(10, 4, seed=0, first=True).tolist() == [0, 1, 2, 3]
    assert select_rows(10, None, seed=0).tolist() == list(range(10))
    assert select_rows(10, 50, seed=0).tolist() == list(range(10))
    with pytest.raises(ValueError, match="at least 1"):
        select_rows(10, 0, seed=0)


def test_rows_take_labels_and_nested_subsets():
    x = torch.arange(40.0).reshape(20, 2)
    y = torch.arange(20) % 4
    data = Dataset("toy", x, x, x, y, y, y, None, None)
    rows = Rows.select(data, "test", 8, seed=1)
    assert torch.equal(rows.take(data), x[rows.indices])
    kw = rows.kw({"model": "cvae"}, data)
    assert torch.equal(kw["y"], y[rows.indices])  # labels follow the same indices
    assert rows.kw({"model": "vae"}, data) == {} == label_kw({"model": "vae"}, data, "test")
    pos, sub = rows.subset(3)
    assert torch.equal(sub.indices, rows.indices[pos]) and sub.num_rows == 3
    rec = rows.record()
    assert rec == {"split": "test", "selection": "random", "seed": 1, "count": 8, "of": 20,
                   "indices": rows.indices.tolist()}
    assert Rows.select(data, "test", None, seed=1).record()["indices"] is None
    first = Rows.select(data, "test", 8, seed=1, first=True)
    assert first.record()["selection"] == "first" and first.subset(3)[0].tolist() == [0, 1, 2]


def _class_ordered(n_per_class: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 784 0/1 pixels, class by class; row of class c has its block c on."""
    x = (rng.random((NUM_CLASSES * n_per_class, 784)) < 0.05).astype(np.uint8)
    y = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    for i, c in enumerate(y):
        x[i, BLOCK * c:BLOCK * (c + 1)] = 1
    return x, y


def _classes_of(rows: np.ndarray) -> set[int]:
    """The class each row says it is: the block with the most pixels on."""
    sums = rows[:, :BLOCK * NUM_CLASSES].reshape(len(rows), NUM_CLASSES, BLOCK).sum(-1)
    return set(sums.argmax(1).tolist())


def test_num_data_covers_every_class_of_a_class_ordered_split(tmp_path, capsys):
    """The binarized-MNIST case of issue 16: test rows stored by class, ``--num-data`` of them
    evaluated and studied by ``gaps``. The recorded rows hold all ten classes (the first N rows
    would hold five), and ``--first-rows`` restores the first N."""
    rng = np.random.default_rng(0)
    train, _ = _class_ordered(10, rng)
    valid, _ = _class_ordered(3, rng)
    test, labels = _class_ordered(PER_CLASS, rng)
    npz = tmp_path / "bm.npz"
    np.savez(npz, train=rng.permutation(train), valid=valid, test=test)
    assert _classes_of(test) == set(range(NUM_CLASSES))
    assert (labels[:100] < 5).all()  # the first 100 rows: five classes only

    run = tmp_path / "run"
    assert main(["--threads", "1", "train", "--data", "binarized-mnist", "--data-path", str(npz),
                 "--out", str(run), "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
                 "--quiet"]) == 0
    assert main(["--threads", "1", "evaluate", str(run), "--num-data", "100", "--k", "5"]) == 0
    assert main(["--threads", "1", "gaps", str(run), "--num-data", "100", "--guides",
                 "--local-steps", "3", "--samples", "5", "--k", "5", "--quiet"]) == 0
    capsys.readouterr()
    doc = json.loads((run / "report.json").read_text())
    ev = doc["sections"]["evaluate"]["provenance"]["rows"]
    gp = doc["sections"]["gaps"]["provenance"]["rows"]["gaps"]
    for rec in (ev["evaluated"], gp):
        assert rec["selection"] == "random" and rec["count"] == 100 and rec["of"] == 200
        idx = rec["indices"]
        assert idx == sorted(set(idx)) and len(idx) == 100
        assert _classes_of(test[idx]) == set(range(NUM_CLASSES))
    assert ev["evaluated"]["indices"] == gp["indices"]  # one seed, one subset in both commands
    shown = ev["reconstructions"]["indices"]
    assert set(shown) <= set(ev["evaluated"]["indices"]) and len(shown) == 10
    assert len(_classes_of(test[shown])) >= 3  # the figure is not ten zeros
    md = (run / "report.md").read_text()
    assert "100 of 200 test rows, seeded random (seed 0), indices in report.json" in md

    assert main(["--threads", "1", "evaluate", str(run), "--num-data", "100", "--k", "5",
                 "--first-rows"]) == 0
    doc = json.loads((run / "report.json").read_text())
    rec = doc["sections"]["evaluate"]["provenance"]["rows"]["evaluated"]
    assert rec["selection"] == "first" and rec["indices"] == list(range(100))
    assert "the first 100 of 200 test rows" in (run / "report.md").read_text()
    capsys.readouterr()
