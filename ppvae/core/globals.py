"""Global latents (outside the data plate): fix them, then analyse per datapoint.

ppvae's estimators are per datapoint: log w[s, n] = log p(x_n, z_sn) - log q(z_sn | x_n) needs
every latent inside ``pyro.plate("data")``. A model with *global* latents, such as a Bayesian
VAE with a prior over its decoder weights W (Blundell et al. 2015; Kingma and Welling 2014,
appendix F), does not factorize that way: log p(x_1..N) = log E_W[prod_n p(x_n | W)] does not
split into per-datapoint terms, so :func:`ppvae.check_pair` rejects such a pair.

The rule ppvae follows: per-datapoint analyses of such a model are analyses of the
*conditional* model p(x, z | W = w) at a fixed w, typically the global guide's mean (or one
draw from it). :func:`fix_globals` wraps a model or guide so that the named sites take the given
values and are hidden from the engine (recorded like ``pyro.deterministic`` sites), which turns
the pair into an ordinary contract-keeping pair; ELBO, IWAE, gaps, AIS and MCMC over z then
apply and mean "given these weights". The marginal over W is not estimated by ppvae.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from .contract import DATA_PLATE, is_latent

__all__ = ["FixGlobals", "fix_globals", "global_latent_names", "global_values"]

Values = Mapping[str, torch.Tensor] | Callable[[], Mapping[str, torch.Tensor]]


class FixGlobals(Messenger):
    """Set the named sample sites to fixed values and mark them deterministic (engine-invisible).

    ``values`` is a mapping, or a callable returning one (read once when the handler is entered,
    so the values can follow a global guide's current parameters).
    """

    def __init__(self, values: Values):
        super().__init__()
        self._source = values
        self.values: dict[str, torch.Tensor] = {}

    def __enter__(self):
        source = self._source() if callable(self._source) else self._source
        self.values = dict(source)
        return super().__enter__()

    def _pyro_sample(self, msg) -> None:
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["is_observed"] = True
            msg["infer"] = {**msg["infer"], "_deterministic": True}


def fix_globals(fn: Callable, values: Values) -> Callable:
    """``fn`` (a model or guide) with the sites in ``values`` fixed and hidden from the engine.

    ``values``: ``{site: tensor}``, or a callable returning it at each call of ``fn``.
    """
    def fixed(*args, **kwargs):
        with FixGlobals(values):
            return fn(*args, **kwargs)

    fixed.__name__ = f"fix_globals({getattr(fn, '__name__', type(fn).__name__)})"
    fixed.__wrapped__ = fn  # type: ignore[attr-defined]  # functools' attribute, set by hand
    return fixed


def _in_data_plate(site: Mapping[str, Any], n: int) -> bool:
    """Inside the per-datapoint plate: one named "data", or at dim -1 with batch size N."""
    return any(f.name == DATA_PLATE or (f.dim == -1 and f.size == n)
               for f in site["cond_indep_stack"])


def global_latent_names(guide: Callable, x: torch.Tensor, *,
                        model_kwargs: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """Latent sites of ``guide(x, **kwargs)`` outside the data plate, in guide order."""
    kwargs = dict(model_kwargs or {})
    with torch.no_grad():
        tr = prune_subsample_sites(poutine.trace(guide).get_trace(x, **kwargs))
    n = int(x.shape[0])
    return tuple(name for name, s in tr.nodes.items()
                 if s["type"] == "sample" and is_latent(s) and not _in_data_plate(s, n))


def global_values(guide: Callable, x: torch.Tensor, how: str = "mean", *,
                  model_kwargs: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Values of the guide's global latents: its distributions' means or one draw.

    Args:
        guide: a guide whose global sites (outside the data plate) are to be fixed.
        x: a batch to run the guide on (only the global sites are kept).
        how: ``"mean"`` (the mean of each global site's distribution) or ``"sample"``.
        model_kwargs: the model's own keyword arguments, passed to the guide.
    """
    kwargs = dict(model_kwargs or {})
    if how not in ("mean", "sample"):
        raise ValueError(f"how must be 'mean' or 'sample', got {how!r}")
    with torch.no_grad():
        tr = prune_subsample_sites(poutine.trace(guide).get_trace(x, **kwargs))
    out = {}
    for name, site in tr.nodes.items():
        if (site["type"] == "sample" and is_latent(site)
                and not _in_data_plate(site, int(x.shape[0]))):
            # pyro types "fn" as Callable and "value" as Optional: a distribution and its draw
            out[name] = (site["fn"].mean  # type: ignore[attr-defined]
                         if how == "mean" else site["value"]).detach()  # type: ignore[union-attr]
    if not out:
        raise ValueError("the guide samples no latent site outside pyro.plate('data'): "
                         "there are no global latents to fix")
    return out
