"""Every figure of ppvae.plots renders to a valid, non-empty PNG for the zoo's pairs; figures that
do not apply raise clear errors; the collapse diagnostic matches a closed form on PPCA."""

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from registry import REGISTRY, binary_batch, labels

import ppvae
from ppvae import guides, models
from ppvae.analysis import plots
from ppvae.analysis.collapse import posterior_collapse


def _check_png(fig, path):
    fig.savefig(path, dpi=60)
    plt.close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)  # [H, W, channels]
    assert img.ndim == 3 and img.shape[0] > 20 and img.shape[1] > 20
    assert img[..., :3].std() > 0.01  # not a blank canvas


@pytest.mark.parametrize("name", ["vae/mlp", "conv_vae/conv", "hierarchical/ladder",
                                  "cvae_learned_prior/conditional"])
def test_figures_render(name, tmp_path):
    e = REGISTRY[name]()
    x, kw = e.x, e.kwargs
    y = labels(n=x.shape[0])
    lat = "z2" if name.startswith("hier") else "z"
    rows = lambda m: {k: v[:1].expand(m) for k, v in kw.items()}  # noqa: E731 labels per image
    figs = {
        "samples": plots.sample_grid(e.model, x, 16, model_kwargs={**rows(16)}),
        "recon": plots.reconstructions(e.model, e.guide, x[:6], model_kwargs={**{k: v[:6] for k,
                                                                                 v in
                                                                    kw.items()}}),
        "manifold": plots.latent_manifold(e.model, x, latent=lat, n=5, model_kwargs={**rows(25)}),
        "scatter": plots.latent_scatter(e.guide, x, y, latent=lat, model_kwargs=kw),
        "interp": plots.interpolation(e.model, e.guide, x, steps=5, latent=lat, model_kwargs=kw),
        "traversal": plots.latent_traversals(e.model, e.guide, x, latent=lat, steps=5,
                                             model_kwargs=kw),
        "collapse": plots.collapse_plot(posterior_collapse(e.model, e.guide, x, latent=lat,
                                                           model_kwargs=kw)),
    }
    for key, fig in figs.items():
        _check_png(fig, tmp_path / f"{key}.png")


def test_decode_reads_the_observed_mean():
    e = REGISTRY["vae/mlp"]()
    z = torch.randn(5, 2)
    out = plots.decode(e.model, {"z": z}, e.x)
    assert out.shape == (5, 64)
    assert torch.allclose(out, torch.sigmoid(e.model.decoder(z)), atol=1e-6)


def test_figures_that_do_not_apply_raise():
    vq = REGISTRY["vqvae/vq"]()
    _check_png_ok = plots.sample_grid(vq.model, vq.x, 9)  # prior codes can be drawn and decoded
    plt.close(_check_png_ok)
    with pytest.raises(ppvae.ContractError, match="discrete support"):
        plots.latent_manifold(vq.model, vq.x)
    with pytest.raises(ppvae.ContractError, match="discrete support"):
        posterior_collapse(vq.model, vq.guide, vq.x)
    with pytest.raises(ppvae.ContractError, match="discrete support"):
        plots.interpolation(vq.model, vq.guide, vq.x)
    with pytest.raises(ppvae.ContractError, match="discrete support"):
        plots.latent_traversals(vq.model, vq.guide, vq.x)
    ae = REGISTRY["autoencoder/delta"]()
    with pytest.raises(ppvae.ContractError, match="cannot be sampled"):
        plots.sample_grid(ae.model, ae.x, 4)
    with pytest.raises(ppvae.ContractError, match="cannot be sampled"):
        plots.latent_manifold(ae.model, ae.x)
    plt.close(plots.interpolation(ae.model, ae.guide, ae.x))  # a point-mass encoder works
    with pytest.raises(ValueError, match="point masses"):
        posterior_collapse(ae.model, ae.guide, ae.x)
    hv = REGISTRY["hierarchical/bottom_up"]()
    with pytest.raises(ValueError, match="2-D latent"):
        plots.latent_manifold(hv.model, hv.x, latent="z1")


def test_collapse_matches_closed_form_on_ppca(float64):
    """PPCA with W = [w, 0]: the exact posterior leaves dimension 2 at the prior (KL 0,
    inactive) and dimension 1 has KL(N(m_n, v) || N(0, 1)) in closed form."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    W = torch.stack([w, torch.zeros(6, dtype=torch.float64)], 1)  # [6, 2]
    b, sigma = torch.zeros(6, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    model = models.PPCA(6, 2, W=W, b=b, sigma=sigma, fixed=True, name="col_ppca")
    guide = guides.AmortizedLinearGaussian.from_ppca(W, b, sigma, "diag", name="col_q")
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    rep = posterior_collapse(model, guide, x)
    v = 1 / (1 + w @ w / sigma**2)
    m = v * (x @ w) / sigma**2  # [N]
    kl = 0.5 * (v + m**2 - 1 - torch.log(v))
    assert torch.allclose(rep.kl[0], kl.mean(), rtol=1e-10)
    assert abs(float(rep.kl[1])) < 1e-12 and float(rep.activity[1]) < 1e-20
    assert rep.num_active == 1 and torch.allclose(rep.activity[0], m.var())


def test_binary_batch_is_fixed():
    assert torch.equal(binary_batch(), binary_batch())


def _image(fig):
    (ax,) = fig.axes
    return ax, np.ma.masked_invalid(ax.images[0].get_array())


def test_sample_grid_draws_from_the_likelihood_unless_means():
    e = REGISTRY["vae/mlp"]()
    ax, img = _image(plots.sample_grid(e.model, e.x, 16))
    assert set(np.unique(img.compressed())) <= {0.0, 1.0}  # Bernoulli draws
    assert img.count() == 16 * 64  # every tile drawn, gaps blank
    ax, img = _image(plots.sample_grid(e.model, e.x, 16, means=True))
    vals = img.compressed()
    assert ((vals > 0) & (vals < 1)).mean() > 0.9  # pixel probabilities
    assert "decoded means" in ax.figure._suptitle.get_text().lower()
    with pytest.raises(ValueError, match="row_labels has 3 labels for 4 rows"):
        plots.sample_grid(e.model, e.x, 16, row_labels=["a", "b", "c"])


def test_manifold_axes_carry_the_prior_quantiles():
    e = REGISTRY["vae/mlp"]()  # a 2-D standard normal latent
    ax, _ = _image(plots.latent_manifold(e.model, e.x, n=5))
    u = torch.linspace(0.1, 0.9, 5)
    z = torch.distributions.Normal(0.0, 1.0).icdf(u)
    cols = [float(t.get_text()) for t in ax.get_xticklabels()]
    rows = [float(t.get_text()) for t in ax.get_yticklabels()]
    assert np.allclose(cols, z, atol=0.03) and np.allclose(rows, z.flip(0), atol=0.03)  # 2 digits
    assert ax.get_xlabel() == "z[0]" and ax.get_ylabel() == "z[1]"


def test_traversals_and_interpolations_label_rows_and_columns():
    e = REGISTRY["vae/mlp"]()
    ax, img = _image(plots.latent_traversals(e.model, e.guide, e.x, steps=5, span=2.0,
                                             label=17, datapoint_label="test row"))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z[0]", "z[1]"]
    assert [float(t.get_text()) for t in ax.get_xticklabels()] == [-2, -1, 0, 1, 2]
    assert "test row 17" in ax.figure._suptitle.get_text().replace("\n", " ")
    ax, img = _image(plots.interpolation(e.model, e.guide, e.x, steps=3, num_pairs=2,
                                         labels=list(range(10, 22))))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x_a", "0", "0.5", "1", "x_b"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["10 → 11", "12 → 13"]
    first = img[:8, :8]  # the first input, x[0] as an 8 x 8 image
    assert np.array_equal(first, e.x[0].reshape(8, 8).numpy())
    with pytest.raises(ValueError, match="num_pairs=7 needs at least 14 rows"):
        plots.interpolation(e.model, e.guide, e.x, num_pairs=7)


def test_image_shapes_fold_rows_in_colour_or_as_given():
    e = REGISTRY["vae/mlp"]()
    _, img = _image(plots.sample_grid(e.model, e.x, 4, image_shape=(4, 16)))
    assert img.shape == (2 * 5 - 1, 2 * 17 - 1)  # 2 x 2 tiles of 4 x 16 with 1-pixel gaps
    with pytest.raises(ValueError, match=r"image_shape \(5, 5\) does not fold rows of 64"):
        plots.sample_grid(e.model, e.x, 4, image_shape=(5, 5))
    x = torch.rand(4, 48)  # 3 x 4 x 4 colour images
    canvas, hw = plots._grid(x, 2, 2, (3, 4, 4))
    assert canvas.shape == (9, 9, 3) and hw == (4, 4)
    assert np.allclose(canvas[:4, :4], x[0].reshape(3, 4, 4).permute(1, 2, 0).numpy())
