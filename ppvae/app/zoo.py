"""The zoo table: every model, guide and training objective the command line builds by name.

:data:`MODELS` and :data:`GUIDES` map a name to a frozen record (:class:`ModelEntry`,
:class:`GuideEntry`) that holds the builder and every fact the other commands ask about a name:

* a model's default guide, the likelihoods it has (:data:`LIKELIHOODS`: Bernoulli for 0/1 rows;
  the VAE also the continuous Bernoulli for grey levels in [0, 1] and a Gaussian with learned
  scale for real-valued rows) and whether it takes the labels as ``y=`` (and so needs labelled
  data);
* a guide's local q* family in the gap report (None: the report cannot take it), the models it
  can be built for (None: any), whether it needs a labelled model and labelled data, and whether
  it is a point mass, whose 'ELBO' and 'IWAE' are the MAP objective log p(x, z*) rather than
  bounds on log p(x).

:data:`OBJECTIVES` maps an objective name to its constructor from the run's ``[train]`` table;
no model restricts the objective. No other module compares model or guide names: it asks these
tables. :func:`resolve_likelihood` decides a run's likelihood (the configured one, checked
against the data, or the one the data imply) and records it in the configuration, so that
config.toml says which one was used and every command that reopens the run uses it again.

Models: ``vae`` (:class:`models.VAE`, Kingma and Welling 2014), ``conv-vae``
(:class:`models.ConvVAE`), ``cvae`` (:class:`models.CVAE`, Sohn et al. 2015), ``hierarchical``
(:class:`models.HierarchicalVAE`, two stochastic layers), ``autoencoder``
(:class:`models.Autoencoder`, a MAP autoencoder with a normal prior) and ``denoising-ae`` (the
same pair trained with :func:`ppvae.denoising`: masking noise unless ``corruption`` says
otherwise; any model takes ``corruption`` / ``noise``), ``wae`` (the Wasserstein
autoencoder of Tolstikhin et al. 2018: the VAE's model and a deterministic ``delta`` encoder
trained with objective ``wae``, :class:`ppvae.WAE`; ``--guide diag`` for a stochastic encoder)
and ``sparse-ae``
(:class:`models.SparseAutoencoder`: an overcomplete code, 100 units unless ``latent_dim`` says
otherwise, under a Laplace prior of rate ``l1``, the L1 penalty).

Guides: ``diag`` (:class:`guides.MLPEncoder`), ``full`` (:class:`guides.FullCovEncoder`),
``flow`` (:class:`guides.FlowEncoder`, IAF of Kingma et al. 2016), ``conv``
(:class:`guides.ConvEncoder`), ``conditional`` (:class:`guides.ConditionalEncoder`),
``bottom-up`` / ``ladder`` (:class:`guides.BottomUpGuide` / :class:`guides.LadderGuide`,
Sønderby et al. 2016), ``delta`` (:class:`guides.DeltaEncoder`) and ``sparse``
(:class:`guides.SparseEncoder`: ``code_activation`` relu, sigmoid or linear; ``top_k`` keeps
the k largest units, the k-sparse autoencoder). ``target_rate`` (with ``sparsity_weight``) adds
the KL-to-target-rate penalty of :func:`ppvae.sparsity_kl` to any objective (sigmoid codes).

Your own model or guide: a name ``module:function`` (``mypkg.models:make_vae``, or a file,
``path/to/models.py:make_vae``) is looked up in the same tables (:func:`user_entry`). The module
is imported (the current folder is on the import path, as for ``python -m``), and the function
is called with the data's :class:`DataShape` (a guide's with the model first:
``make_guide(model, shape)``); it returns a model or guide keeping the ppvae contract, which the
training pre-flight checks (:func:`ppvae.check_pair`) before anything is written. A user model
states its own likelihood (``--likelihood`` is refused) and reads no ``[sizes]`` keys; its
default guide is ``diag`` (sized by ``--latent-dim`` and ``--hidden``). Optional attributes of
the function say more: ``takes_labels = True`` (the model and guide get the labels as ``y=``),
and for a guide ``local_family`` (its q* family in the gap report, default ``"diag"``) and
``point_mass``. The run's config.toml records the name, so every later command imports the same
function again: a run directory's config.toml is trusted like the code it names.

A guide is built for any model it can be constructed for; whether the pair keeps the ppvae
contract is then decided by :func:`ppvae.check_pair` (a ``diag`` guide for the hierarchical
model fails there, naming the site). Names that are unknown, or that cannot be built for the
model or data (``ladder`` without the hierarchical model, ``conditional`` without labels),
raise :class:`BuildError` listing the valid choices.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

from .. import guides, models
from ..train import objectives, wae
from ..train.corruption import denoising
from ..train.sparsity import sparsity_kl

__all__ = [
    "DEFAULT_NOISE",
    "GUIDES",
    "LIKELIHOODS",
    "MODELS",
    "OBJECTIVES",
    "OBJECTIVE_DEFAULTS",
    "OBJECTIVE_OPTIONS",
    "BuildError",
    "DataShape",
    "GuideEntry",
    "ModelEntry",
    "ModelSpec",
    "build_guide",
    "build_model",
    "check_names",
    "default_guide",
    "is_user_name",
    "make_objective",
    "resolve_likelihood",
    "user_entry",
]

# p(x | z) of the zoo's models: 0/1 data; grey levels in [0, 1] (Loaiza-Ganem and Cunningham
# 2019); real values (learned scale)
LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")


class BuildError(ValueError):
    """An unknown or unbuildable model, guide or data set name."""


class ModelSpec(NamedTuple):
    """Sizes shared by model and guide."""

    latent_dim: int = 4
    hidden: tuple[int, ...] = (128,)
    top_latent_dim: int = 2  # the hierarchical model's upper layer
    num_flows: int = 2  # flow guide layers
    channels: int = 16  # conv model / guide
    l1: float = 0.0  # sparse-ae: the Laplace prior's rate (the L1 penalty's weight)
    top_k: int | None = None  # sparse guide: keep the k largest code units (None: all)
    code_activation: str | None = None  # sparse guide: relu / sigmoid / linear (None: its own)

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, Any]) -> ModelSpec:
        """The spec of a run's ``[sizes]`` table (missing keys take the defaults)."""
        d = cls()
        top_k = sizes.get("top_k")
        return cls(int(sizes.get("latent_dim", d.latent_dim)),
                   tuple(int(h) for h in sizes.get("hidden", d.hidden)),
                   int(sizes.get("top_latent_dim", d.top_latent_dim)),
                   int(sizes.get("num_flows", d.num_flows)),
                   int(sizes.get("channels", d.channels)),
                   float(sizes.get("l1", d.l1)), None if top_k is None else int(top_k),
                   sizes.get("code_activation"))


class DataShape(NamedTuple):
    """What a builder needs to know of the data."""

    data_dim: int  # features per row
    image_shape: tuple[int, ...] | None = None
    num_classes: int | None = None  # None: unlabelled data


@dataclass(frozen=True)
class ModelEntry:
    """One model of the zoo."""

    build: Callable[[ModelSpec, DataShape, str, str], Any]  # (spec, shape, likelihood, label)
    default_guide: str
    likelihoods: tuple[str, ...] = ("bernoulli",)  # among LIKELIHOODS; (): a user model's own
    takes_labels: bool = False  # model and guide get the labels as y=
    sizes: tuple[str, ...] = ("latent_dim", "hidden")  # the [sizes] keys its builder reads
    # the model's own defaults: {table: {key: value}} used unless a config or flag sets the key
    # (wae trains with objective wae, denoising-ae with a corruption)
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class GuideEntry:
    """One guide of the zoo."""

    build: Callable[[Any, ModelSpec, DataShape, str], Any]  # (model, spec, shape, label)
    local_family: str | None = None  # its local q* family in the gap report; None: no report
    for_models: tuple[str, ...] | None = None  # built from the model object: only these
    needs_labels: bool = False  # only for a model taking labels, on labelled data
    point_mass: bool = False  # its 'ELBO' / 'IWAE' are log p(x, z*), not bounds on log p(x)
    sizes: tuple[str, ...] = ("latent_dim", "hidden")  # the [sizes] keys its builder reads


def _side(shape: DataShape, who: str) -> int:
    side = math.isqrt(shape.data_dim)
    if shape.image_shape is None or side * side != shape.data_dim or side % 4:
        raise BuildError(f"'{who}' needs square one-channel (grey) images with a side divisible "
                         f"by 4; this data has {shape.data_dim} values per row (image shape "
                         f"{shape.image_shape}); for colour images use model 'vae'")
    return side


def _vae(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
    h = tuple(spec.hidden)
    if likelihood == "gaussian":
        return models.VAE(shape.data_dim, spec.latent_dim, h, likelihood="gaussian",
                          learn_sigma=True, name=label)
    return models.VAE(shape.data_dim, spec.latent_dim, h, name=label,
                      likelihood=likelihood.replace("-", "_"))


def _conv_vae(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
    return models.ConvVAE(_side(shape, "conv-vae"), spec.latent_dim, spec.channels, name=label)


def _cvae(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
    return models.CVAE(shape.data_dim, shape.num_classes, spec.latent_dim, tuple(spec.hidden),
                       name=label)


def _hierarchical(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
    return models.HierarchicalVAE(shape.data_dim, (spec.latent_dim, spec.top_latent_dim),
                                  tuple(spec.hidden), name=label)


def _autoencoder(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
    return models.Autoencoder(shape.data_dim, spec.latent_dim, tuple(spec.hidden),
                              prior="normal", name=label)


def _sparse_ae(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
    return models.SparseAutoencoder(shape.data_dim, spec.latent_dim, tuple(spec.hidden),
                                    l1=spec.l1, likelihood=likelihood.replace("-", "_"),
                                    name=label)


def _sparse(model, spec: ModelSpec, shape: DataShape, label: str):
    return guides.SparseEncoder(shape.data_dim, spec.latent_dim, tuple(reversed(spec.hidden)),
                                activation=spec.code_activation, k=spec.top_k, name=label)


def _encoder(cls, **options) -> Callable[[Any, ModelSpec, DataShape, str], Any]:
    """Builder of an MLP-style encoder ``cls(data_dim, latent_dim, hidden reversed, ...)``."""

    def build(model, spec: ModelSpec, shape: DataShape, label: str):
        extra = {k: getattr(spec, v) for k, v in options.items()}
        return cls(shape.data_dim, spec.latent_dim, tuple(reversed(spec.hidden)), **extra,
                   name=label)

    return build


def _conv(model, spec: ModelSpec, shape: DataShape, label: str):
    return guides.ConvEncoder(_side(shape, "conv"), spec.latent_dim, spec.channels, name=label)


def _conditional(model, spec: ModelSpec, shape: DataShape, label: str):
    return guides.ConditionalEncoder(shape.data_dim, shape.num_classes, spec.latent_dim,
                                     tuple(reversed(spec.hidden)), name=label)


def _bottom_up(model, spec: ModelSpec, shape: DataShape, label: str):
    return guides.BottomUpGuide(shape.data_dim, (spec.latent_dim, spec.top_latent_dim),
                                tuple(reversed(spec.hidden)), name=label)


def _ladder(model, spec: ModelSpec, shape: DataShape, label: str):
    return guides.LadderGuide(model, (spec.hidden[-1], 64), name=label)


_USER = re.compile(r"^(?P<module>[^:\s]+):(?P<attr>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)$")
_NOT_WORD = re.compile(r"\W")
_user_cache: dict[str, Any] = {}


def is_user_name(name: str) -> bool:
    """``name`` has the form ``module:function`` (or ``file.py:function``) of a user's builder."""
    return isinstance(name, str) and _USER.match(name) is not None


def _import(module: str, what: str) -> Any:
    """The module ``module`` (a dotted name, or a ``.py`` file path)."""
    try:
        if module.endswith(".py"):
            path = Path(module)
            if not path.is_file():
                raise BuildError(f"{what}: file {path} not found")
            name = "ppvae_user_" + _NOT_WORD.sub("_", str(path.resolve()))
            if name in sys.modules:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise BuildError(f"{what}: {path} cannot be imported as a Python module")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[name]
                raise
            return mod
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` does: modules next to the user
        return importlib.import_module(module)
    except BuildError:
        raise
    except ModuleNotFoundError as e:
        raise BuildError(f"{what}: cannot import module '{module}' ({e}); it must be on the "
                         "import path (PYTHONPATH, an installed package or the current "
                         "folder), or give a file: path/to/file.py:function") from e
    except Exception as e:
        raise BuildError(f"{what}: importing '{module}' failed: {type(e).__name__}: {e}") from e


def _resolve(name: str, what: str) -> Callable[..., Any]:
    """The function a ``module:function`` name refers to."""
    if name in _user_cache:
        return _user_cache[name]
    m = _USER.match(name)
    if m is None:
        raise BuildError(f"{what} '{name}' is not of the form module:function")
    obj: Any = _import(m.group("module"), f"{what} '{name}'")
    for part in m.group("attr").split("."):
        if not hasattr(obj, part):
            raise BuildError(f"{what} '{name}': '{m.group('module')}' has no attribute "
                             f"'{m.group('attr')}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BuildError(f"{what} '{name}': {m.group('attr')} is a {type(obj).__name__}, not "
                         "a function")
    _user_cache[name] = obj
    return obj


def _checked(made: Any, name: str, what: str) -> Any:
    if not callable(made):
        raise BuildError(f"{what} '{name}' returned a {type(made).__name__}, not a callable "
                         f"Pyro {what}")
    return made


def user_entry(name: str, kind: str) -> ModelEntry | GuideEntry:
    """The table entry of a user's ``module:function`` model (``kind="model"``) or guide.

    Raises:
        BuildError: the module cannot be imported, has no such function, or it is not callable
            (the message names the problem).
    """
    fn = _resolve(name, kind)
    if kind == "model":
        def build_model_(spec: ModelSpec, shape: DataShape, likelihood: str, label: str):
            return _checked(_call(fn, name, "model", shape), name, "model")

        return ModelEntry(build_model_, "diag", likelihoods=(),
                          takes_labels=bool(getattr(fn, "takes_labels", False)), sizes=())

    def build_guide_(model, spec: ModelSpec, shape: DataShape, label: str):
        return _checked(_call(fn, name, "guide", model, shape), name, "guide")

    family = getattr(fn, "local_family", "diag")
    return GuideEntry(build_guide_, local_family=family,
                      point_mass=bool(getattr(fn, "point_mass", False)), sizes=())


def _call(fn: Callable[..., Any], name: str, what: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:
        raise BuildError(f"{what} '{name}' failed to build for data of shape {args[-1]}: "
                         f"{type(e).__name__}: {e}") from e


E = TypeVar("E")


class _Table(Mapping[str, E], Generic[E]):
    """The zoo's entries by name; ``module:function`` names resolve to a user's builder.

    Iteration lists the built-in names only (what error messages offer as choices).
    """

    def __init__(self, entries: Mapping[str, E], kind: str) -> None:
        self._entries = MappingProxyType(dict(entries))
        self._kind = kind

    def __getitem__(self, name: str) -> E:
        if name in self._entries:
            return self._entries[name]
        if is_user_name(name):
            return user_entry(name, self._kind)  # type: ignore[return-value]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries or (isinstance(name, str) and is_user_name(name)
                                         and self[name] is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


MODELS: Mapping[str, ModelEntry] = _Table({
    "vae": ModelEntry(_vae, "diag", likelihoods=LIKELIHOODS),
    "conv-vae": ModelEntry(_conv_vae, "conv", sizes=("latent_dim", "channels")),
    "cvae": ModelEntry(_cvae, "conditional", takes_labels=True),
    "hierarchical": ModelEntry(_hierarchical, "bottom-up",
                               sizes=("latent_dim", "hidden", "top_latent_dim")),
    "autoencoder": ModelEntry(_autoencoder, "delta"),
    "denoising-ae": ModelEntry(_autoencoder, "delta",
                               defaults={"train": {"corruption": "masking"}}),
    "wae": ModelEntry(_vae, "delta", likelihoods=LIKELIHOODS,
                      defaults={"train": {"objective": "wae"}}),
    "sparse-ae": ModelEntry(_sparse_ae, "sparse", likelihoods=("bernoulli", "continuous-bernoulli"),
                            sizes=("latent_dim", "hidden", "l1"),
                            defaults={"sizes": {"latent_dim": 100, "l1": 0.1}}),
}, "model")

GUIDES: Mapping[str, GuideEntry] = _Table({
    "diag": GuideEntry(_encoder(guides.MLPEncoder), local_family="diag"),
    "full": GuideEntry(_encoder(guides.FullCovEncoder), local_family="full"),
    "flow": GuideEntry(_encoder(guides.FlowEncoder, num_flows="num_flows"),
                       local_family="flow", sizes=("latent_dim", "hidden", "num_flows")),
    "conv": GuideEntry(_conv, local_family="diag", sizes=("latent_dim", "channels")),
    "conditional": GuideEntry(_conditional, local_family="diag", needs_labels=True),
    "bottom-up": GuideEntry(_bottom_up, sizes=("latent_dim", "hidden", "top_latent_dim")),
    "ladder": GuideEntry(_ladder, for_models=("hierarchical",), sizes=("hidden",)),
    "delta": GuideEntry(_encoder(guides.DeltaEncoder), point_mass=True),
    "sparse": GuideEntry(_sparse, point_mass=True,
                         sizes=("latent_dim", "hidden", "top_k", "code_activation")),
}, "guide")

# the corruption level of a denoising run that sets --corruption but not --noise: Vincent et
# al. (2010)'s 25% masking / salt-and-pepper on MNIST; for "gaussian" the noise's sd
DEFAULT_NOISE = 0.25

# the [train] options of the objectives when a run does not set them: the API's defaults
# (ppvae.ELBO particles, ppvae.IWAE k); ppvae.beta_vae and ppvae.kl_warmup have none, so the
# command line's are its own
OBJECTIVE_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "particles": objectives.ELBO.num_particles, "iwae_k": objectives.IWAE.k, "beta": 2.0,
    "warmup_steps": 500, "mmd_weight": wae.WAE.mmd_weight, "kernel": wae.WAE.kernel})


def _option(t: Mapping[str, Any], key: str) -> Any:
    return t.get(key, OBJECTIVE_DEFAULTS[key])


OBJECTIVES: Mapping[str, Callable[[Mapping[str, Any]], objectives.Objective]] = (
    MappingProxyType({
        "elbo": lambda t: objectives.ELBO(_option(t, "particles")),
        "iwae": lambda t: objectives.IWAE(_option(t, "iwae_k")),
        "beta": lambda t: objectives.beta_vae(_option(t, "beta")),
        "kl-warmup": lambda t: objectives.kl_warmup(_option(t, "warmup_steps")),
        "mean-field": lambda t: objectives.mean_field(_option(t, "particles")),
        "wae": lambda t: wae.WAE(_option(t, "mmd_weight"), _option(t, "kernel"),
                                 num_particles=_option(t, "particles")),
    }))
# the [train] options each objective reads (others set with it are refused as ignored)
OBJECTIVE_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "elbo": ("particles",), "iwae": ("iwae_k",), "beta": ("beta",),
    "kl-warmup": ("warmup_steps",), "mean-field": ("particles",),
    "wae": ("mmd_weight", "kernel", "particles")})


def default_guide(model: str) -> str:
    """The usual guide of ``model`` (``diag`` for a name the zoo does not know)."""
    entry = MODELS.get(model)
    return "diag" if entry is None else entry.default_guide


def make_objective(train: Mapping[str, Any]) -> objectives.Objective:
    """The objective of a run's ``[train]`` table (``objective``, default ``elbo``).

    With ``target_rate`` set (and ``sparsity_weight``), :func:`ppvae.sparsity_kl` adds the
    KL-to-target-rate penalty on the codes; with ``corruption`` set (and ``noise``, its level),
    the objective is wrapped in :func:`ppvae.denoising`: the guide sees corrupted inputs.
    """
    name = train.get("objective", "elbo")
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; choose one of: {', '.join(OBJECTIVES)}")
    made = OBJECTIVES[name](train)
    if train.get("target_rate") is not None:
        made = sparsity_kl(train["target_rate"], train.get("sparsity_weight", 1.0), made)
    if train.get("corruption") is not None:
        made = denoising(train["corruption"], train.get("noise", DEFAULT_NOISE), made)
    return made


def check_names(model: str, guide: str) -> None:
    """Raise :class:`BuildError` for an unknown model or guide name, or a mismatched guide.

    A mismatched guide is one that needs another model. The check runs before any data are
    loaded.
    """
    if model not in MODELS:
        raise BuildError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}, or "
                         "module:function for your own")
    if guide not in GUIDES:
        raise BuildError(f"unknown guide '{guide}'; choose one of: {', '.join(GUIDES)}, or "
                         "module:function for your own")
    needs = GUIDES[guide].for_models
    if needs is not None and model not in needs:
        raise BuildError(f"guide '{guide}' does not fit model '{model}' (it needs model "
                         f"{' or '.join(needs)}); guides for '{model}': "
                         f"{', '.join(g for g, e in GUIDES.items() if e.for_models is None)}")


def build_model(name: str, spec: ModelSpec, shape: DataShape, *, binary: bool = True,
                likelihood: str | None = None, label: str = "model"):
    """The model ``name`` for data of ``shape``.

    ``likelihood``: one of :data:`LIKELIHOODS` (:func:`resolve_likelihood`); None: Bernoulli
    when ``binary`` (the data are 0/1), else Gaussian. A likelihood the model does not have is
    refused, naming the models that have it.
    """
    if name not in MODELS:
        raise BuildError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    entry = MODELS[name]
    guessed = likelihood is None
    likelihood = likelihood or ("bernoulli" if binary else "gaussian")
    if entry.likelihoods and likelihood not in entry.likelihoods:  # (): a user model's own
        raise BuildError(_no_likelihood(name, likelihood, guessed))
    if entry.takes_labels and not shape.num_classes:
        raise BuildError(f"model '{name}' needs labelled data (digits, mnist, fashion-mnist, or "
                         "a folder of images in class subfolders)")
    return entry.build(spec, shape, likelihood, label)


def _no_likelihood(model: str, likelihood: str, guessed: bool = False, values: str = "") -> str:
    """Why ``model`` cannot have ``likelihood``, and what to do.

    ``guessed``: the likelihood was not asked for but implied by data that are not 0/1
    (``values``: which values the data have, when known).
    """
    if guessed and MODELS[model].likelihoods == ("bernoulli",):
        return (f"model '{model}' has a Bernoulli likelihood and needs 0/1 data{values}; "
                "binarize the data (--binarize static, for values in [0, 1]) or use model "
                "'vae' (--likelihood gaussian or continuous-bernoulli)")
    has = " or ".join(f"'{m}'" for m, e in MODELS.items() if likelihood in e.likelihoods)
    own = ", ".join(MODELS[model].likelihoods)
    fix = ("binarize the data (--binarize static, for values in [0, 1]) or use " if
           own == "bernoulli" else "use ")
    return (f"model '{model}' has the likelihood {own} only, not {likelihood}; {fix}model "
            f"{has} (--likelihood {likelihood})")


def _binary(data) -> bool:
    """Every value of every split is 0 or 1, or the data are binarized."""
    return data.binarization is not None or all(
        bool(((s == 0) | (s == 1)).all()) for s in (data.train, data.valid, data.test))


def _unit(data) -> bool:
    """Every value of every split is in [0, 1]."""
    return all(bool(((s >= 0) & (s <= 1)).all()) for s in (data.train, data.valid, data.test))


def resolve_likelihood(cfg: dict, data) -> str | None:
    """The likelihood of the run's model, recorded as ``cfg["likelihood"]``; returns it.

    The configured one (config.toml, ``--config`` or ``--likelihood``) when set, checked
    against the data: Bernoulli needs 0/1 (or binarized) values, the continuous Bernoulli
    values in [0, 1]; the Gaussian takes any. Unset: Bernoulli for 0/1 or binarized data,
    Gaussian otherwise (real-valued rows, grey levels that were not binarized), as the model
    allows. Recording it means config.toml says which likelihood was trained, and a resumed or
    reopened run uses that one rather than guessing again.

    A user's model (``module:function``) states its own likelihood: None is returned and
    nothing recorded.

    Raises:
        BuildError: a likelihood the data or the model do not allow, naming the fix.
    """
    entry = MODELS.get(cfg["model"])
    if entry is None:
        raise BuildError(f"unknown model '{cfg['model']}'; choose one of: {', '.join(MODELS)}")
    name = cfg.get("likelihood")
    if not entry.likelihoods:
        if name is not None:
            raise BuildError(f"model '{cfg['model']}' is your own: it states its likelihood; "
                             "remove --likelihood")
        return None
    if name is None:
        name = "bernoulli" if _binary(data) else "gaussian"
        if name not in entry.likelihoods:
            raise BuildError(_no_likelihood(
                cfg["model"], name, guessed=True,
                values=f"; {data.name} has values in [{_low(data):.4g}, {_high(data):.4g}]"))
    elif name not in entry.likelihoods:
        raise BuildError(_no_likelihood(cfg["model"], name))
    elif name == "bernoulli" and not _binary(data):
        raise BuildError(f"the bernoulli likelihood needs 0/1 data; {data.name} has values in "
                         f"[{_low(data):.4g}, {_high(data):.4g}]: binarize it (--binarize "
                         "static, for values in [0, 1]) or choose --likelihood "
                         "continuous-bernoulli (values in [0, 1]) or gaussian")
    elif name == "continuous-bernoulli" and not _unit(data):
        raise BuildError(f"the continuous-bernoulli likelihood needs values in [0, 1]; "
                         f"{data.name} has values in [{_low(data):.4g}, {_high(data):.4g}]; "
                         "choose --likelihood gaussian")
    cfg["likelihood"] = name
    return name


def _low(data) -> float:
    return min(float(s.min()) for s in (data.train, data.valid, data.test))


def _high(data) -> float:
    return max(float(s.max()) for s in (data.train, data.valid, data.test))


def build_guide(name: str, model, model_name: str, spec: ModelSpec, shape: DataShape, *,
                label: str = "guide"):
    """The guide ``name`` for ``model`` (built as ``model_name``) and data of ``shape``."""
    check_names(model_name, name)
    entry = GUIDES[name]
    if entry.needs_labels and not (shape.num_classes and MODELS[model_name].takes_labels):
        labelled = " or ".join(f"'{m}'" for m, e in MODELS.items() if e.takes_labels)
        raise BuildError(f"guide '{name}' needs model {labelled} with labelled data; for "
                         f"'{model_name}' use {default_guide(model_name)}")
    return entry.build(model, spec, shape, label)
