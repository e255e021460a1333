"""The architecture registry: the one place that maps an architecture name to its class.

An architecture is a :class:`~medsae.sae.base.SparseAutoencoder` subclass stating its traits
(see that class) with ``name`` and ``config_class`` set. The built-in ones (``topk``,
``batchtopk``, ``matryoshka``, ``matryoshka-perlevel``, ``relu`` and the baseline
dictionaries ``pca``, ``ica``, ``kmeans``, ``dictionary``, ``random``) register themselves with the
:func:`register` decorator when their modules are imported; an outside package registers
either by the decorator (imported before use) or through an entry point, with no edit in
medsae::

    [project.entry-points."medsae.architectures"]
    my-arch = "my_package.my_arch:MySAE"

A run's configuration (``cfg.json``) is validated as the pydantic discriminated union of the
registered config classes on ``arch`` (:func:`sae_config`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, Union

from pydantic import Field, TypeAdapter

from medsae.errors import InputError

if TYPE_CHECKING:
    from medsae.sae.base import SparseAutoencoder
    from medsae.sae.config import SAEConfig

ENTRY_POINT_GROUP = "medsae.architectures"
BUILTIN_MODULES = (
    "medsae.sae.topk",
    "medsae.sae.matryoshka",
    "medsae.sae.relu",
    "medsae.sae.baselines",
)

REGISTRY: dict[str, type[SparseAutoencoder]] = {}
"""Architecture name -> module class (complete once :func:`names` or :func:`get` ran)."""

_loaded = False
_adapter: tuple[tuple[type[Any], ...], TypeAdapter[Any]] | None = None

A = TypeVar("A", bound="type[SparseAutoencoder]")


def register(cls: A) -> A:
    """Class decorator: add an architecture under ``cls.name`` (its config's ``arch``)."""
    name = getattr(cls, "name", "")
    config_class = getattr(cls, "config_class", None)
    if not name or config_class is None:
        raise TypeError(f"{cls.__qualname__} needs a `name` and a `config_class` to be registered")
    field = config_class.model_fields.get("arch")
    if field is None or getattr(field.annotation, "__args__", None) != (name,):
        raise TypeError(
            f"{config_class.__qualname__}.arch must be Literal[{name!r}] (the architecture's name)"
        )
    current = REGISTRY.get(name)
    if current is not None and current is not cls:
        raise ValueError(
            f"SAE architecture {name!r} is already registered by "
            f"{current.__module__}.{current.__qualname__}"
        )
    REGISTRY[name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plug-in must not break the built-in architectures
            warnings.warn(
                f"SAE architecture entry point {ep.name!r} failed to load: {e}", stacklevel=2
            )
            continue
        if isinstance(obj, type) and REGISTRY.get(getattr(obj, "name", "")) is not obj:
            register(obj)


def names() -> list[str]:
    """Every registered architecture name, sorted."""
    _load()
    return sorted(REGISTRY)


def get(name: str) -> type[SparseAutoencoder]:
    """The class registered under ``name``; an :class:`InputError` listing the known ones."""
    _load()
    if name not in REGISTRY:
        raise InputError("SAE architecture", f"unknown {name!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def config_union() -> Any:
    """The run configuration's type: the registered config classes as a pydantic
    discriminated union on ``arch`` (usable as a field type of a model holding any SAE's
    configuration, e.g. ``Annotated[..., Field(discriminator="arch")]``)."""
    _load()
    classes = tuple(cls.config_class for cls in REGISTRY.values())
    union = Union[classes] if len(classes) > 1 else classes[0]  # noqa: UP007
    return Annotated[union, Field(discriminator="arch")]


def config_adapter() -> TypeAdapter[Any]:
    """A pydantic ``TypeAdapter`` of :func:`config_union` (rebuilt when the registry grows)."""
    global _adapter
    _load()
    classes = tuple(cls.config_class for cls in REGISTRY.values())
    if _adapter is None or _adapter[0] != classes:
        _adapter = (classes, TypeAdapter(config_union()))
    return _adapter[1]


def sae_config(data: dict[str, Any] | None = None, /, **fields: Any) -> SAEConfig:
    """Validate one SAE's configuration into its architecture's config class.

    ``sae_config(arch="topk", d_in=768, n_latents=8192, k=32)`` or ``sae_config(dict)``;
    raises pydantic's ``ValidationError`` (a ``ValueError``) for invalid fields and an
    :class:`InputError` for an unknown architecture.
    """
    merged = {**(data or {}), **fields}
    # the union's own dispatch on the tag, through the class so that errors name it alone
    cfg: SAEConfig = get(str(merged.get("arch"))).config_class.model_validate(merged)
    return cfg


def build_sae(cfg: SAEConfig, fast: bool = True, seed: int = 0) -> SparseAutoencoder:
    """Instantiate the module registered for ``cfg.arch``."""
    return get(cfg.arch)(cfg, fast=fast, seed=seed)


__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "build_sae",
    "config_adapter",
    "config_union",
    "get",
    "names",
    "register",
    "sae_config",
]
