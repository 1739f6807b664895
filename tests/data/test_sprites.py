"""The sprites data set: seeded, inside the image, every factor visible, split with its factors.

All checks are exact: the renderer is deterministic, and the factor grids are chosen so that a
step in x or y is a whole number of pixels at 32x32 and 64x64 (1/16 of the side).
"""

import itertools

import numpy as np
import pytest
import torch

from ppvae.data import load_dataset, render_sprites, sprites
from ppvae.data.sprites import FACTOR_NAMES, FACTOR_VALUES, SHAPES, Sprites

GRID = np.array(list(itertools.product(*(range(len(v)) for v in FACTOR_VALUES))))  # [7680, 5]


def test_sprites_are_seeded_and_binary():
    a, b, c = sprites(500, seed=3), sprites(500, seed=3), sprites(500, seed=4)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert torch.equal(a.factors, b.factors)
    assert not torch.equal(a.factors, c.factors)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (500, 32, 32) and a.images.dtype == torch.float32
    assert a.factors.shape == (500, 5) and a.factors.dtype == torch.int64
    assert set(a.images.unique().tolist()) == {0.0, 1.0}
    # every factor value is drawn (500 draws over at most 8 values)
    for k, v in enumerate(FACTOR_VALUES):
        assert set(a.factors[:, k].tolist()) == set(range(len(v)))


def test_repr_and_dataframe():
    s = sprites(20, size=28, seed=0)
    assert isinstance(s, Sprites)
    assert repr(s) == ("Sprites(20 images 28x28; factors shape 3, scale 5, rotation 8, x 8, "
                       "y 8)")
    assert s.num_values == (3, 5, 8, 8, 8)
    df = s.to_dataframe()
    assert list(df.columns) == list(FACTOR_NAMES) and len(df) == 20
    assert (df["shape"].to_numpy() == s.factors[:, 0].numpy()).all()


@pytest.mark.parametrize("size", [28, 32, 64])
def test_every_sprite_stays_inside_its_disc_and_off_the_border(size):
    grid = GRID if size != 64 else GRID[(GRID[:, 1] == 4)]  # at 64: the largest scale only
    img = render_sprites(grid, size)  # [M, S, S]
    assert img.sum((1, 2)).min() > 0  # every sprite shows
    border = img[:, 0].any() | img[:, -1].any() | img[:, :, 0].any() | img[:, :, -1].any()
    assert not border
    # every covered pixel centre lies within the shape's enclosing disc (radius scale * S / 4)
    centres = (np.arange(size) + 0.5) / size
    cx = FACTOR_VALUES[3][grid[:, 3]][:, None, None]
    cy = FACTOR_VALUES[4][grid[:, 4]][:, None, None]
    dist = np.hypot(centres[None, None, :] - cx, centres[None, :, None] - cy)  # [M, S, S]
    radius = FACTOR_VALUES[1][grid[:, 1]] * 0.25
    assert (np.where(img, dist, 0).max((1, 2)) <= radius * (1 + 1e-5)).all()


@pytest.mark.parametrize("size", [32, 64])
def test_a_position_step_moves_the_sprite_by_whole_pixels(size):
    step = size // 16  # positions are 1/16 of the side apart
    base = GRID[(GRID[:, 3] < 7) & (GRID[:, 4] < 7) & (GRID[:, 2] % 3 == 0)]
    img = render_sprites(base, size)
    right = render_sprites(base + np.array([0, 0, 0, 1, 0]), size)
    down = render_sprites(base + np.array([0, 0, 0, 0, 1]), size)
    np.testing.assert_array_equal(right[:, :, step:], img[:, :, :-step])
    np.testing.assert_array_equal(down[:, step:, :], img[:, :-step, :])
    cols = np.arange(size)
    centroid = (img.sum(1) * cols).sum(1) / img.sum((1, 2))
    moved = (right.sum(1) * cols).sum(1) / right.sum((1, 2))
    np.testing.assert_allclose(moved - centroid, step, rtol=0, atol=1e-9)


def test_larger_scales_cover_more_pixels():
    img = render_sprites(GRID, 32).reshape(3, 5, 8, 8, 8, 32, 32)  # GRID is in factor order
    # the shapes are star-shaped about their centre, so a larger scale covers every pixel of a
    # smaller one (and a step of 1 pixel in radius may add none: an axis-aligned square)
    assert (img[:, :-1] <= img[:, 1:]).all()
    area = img.sum((-1, -2))  # [shape, scale, rotation, x, y]
    assert (area[:, -1] > area[:, 0]).all()
    assert (np.diff(area.mean((2, 3, 4)), axis=1) > 0).all()
    # areas in units of r^2, r the enclosing radius (square 2, ellipse pi / 2, heart ~2.34):
    # at the largest scale (r = 8 pixels) the pixel count is within 5% of the area
    r2 = (FACTOR_VALUES[1] * 8.0) ** 2
    mean = area.mean((2, 3, 4)) / r2  # [shape, scale]
    np.testing.assert_allclose(mean[:2, -1], [2.0, np.pi / 2], rtol=0.05)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes_and_rotations_are_distinguishable(size):
    img = render_sprites(GRID, size).reshape(3, 5, 8, 8, 8, -1)
    for a, b in itertools.combinations(range(3), 2):  # same other factors, another shape
        assert (img[a] != img[b]).any(-1).all()
    # rotation covers a quarter turn: every angle gives another image for every shape, scale
    # and position (over a full turn the square and the ellipse would repeat themselves)
    flat = img.transpose(0, 1, 3, 4, 2, 5).reshape(-1, 8, size * size)  # [..., rotation, pixels]
    for i, j in itertools.combinations(range(8), 2):
        assert (flat[:, i] != flat[:, j]).any(-1).all()


def test_render_refuses_bad_factors():
    with pytest.raises(ValueError, match=r"factor 'rotation' takes indices 0\.\.7, got 8"):
        render_sprites([[0, 0, 8, 0, 0]])
    with pytest.raises(ValueError, match=r"integer indices of shape \[N, 5\]"):
        render_sprites(np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="size must be an integer >= 16"):
        render_sprites([[0, 0, 0, 0, 0]], size=8)
    with pytest.raises(ValueError, match="num must be a positive integer"):
        sprites(0)


def test_load_dataset_gives_aligned_splits_labels_and_factors():
    ds = load_dataset("sprites", seed=2)
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((4800, 1024), (600, 1024),
                                                               (600, 1024))
    assert ds.image_shape == (32, 32) and ds.binarization is None
    assert ds.classes == SHAPES and ds.factor_names == FACTOR_NAMES
    assert ds.factors is not None
    for x, y, f in zip((ds.train, ds.valid, ds.test),
                       (ds.train_labels, ds.valid_labels, ds.test_labels), ds.factors,
                       strict=True):
        assert f.dtype == torch.int64 and f.shape == (len(x), 5)
        assert torch.equal(y, f[:, 0])
        assert torch.equal(x, torch.from_numpy(render_sprites(f.numpy())).reshape(len(x), -1)
                           .float())
    everything = torch.cat(ds.factors)  # the splits partition the generated set
    assert torch.equal(everything.sort(0).values, sprites(seed=2).factors.sort(0).values)
    assert torch.equal(load_dataset("sprites", seed=2).test, ds.test)
    assert "factors shape, scale, rotation, x, y" in repr(ds)


def test_load_dataset_options():
    small = load_dataset("sprites", num_data=200, size=64, binarize="static")
    assert small.train.shape == (160, 64 * 64) and small.image_shape == (64, 64)
    assert torch.equal(small.train, load_dataset("sprites", num_data=200, size=64).train)
    with pytest.raises(TypeError, match=r"unexpected options for 'sprites': \['latent_dim'\] "
                                        r"\(it takes num_data, size\)"):
        load_dataset("sprites", latent_dim=3)
    digits = load_dataset("digits")
    assert digits.factors is None and digits.factor_names is None
