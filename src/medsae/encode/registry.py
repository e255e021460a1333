"""The encoder registry: built-in encoders plus third-party ones from entry points.

A third-party package registers an encoder in its ``pyproject.toml``::

    [project.entry-points."medsae.encoders"]
    my-encoder = "my_package.encoders:MyEncoder"

The object is called with the user's options (``--option key=value``) and must return an
object following :class:`medsae.encode.base.Encoder`. It may carry ``summary`` (one line),
``dim`` (shown by ``medsae encoders``) and ``availability()`` returning ``(bool, note)``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medsae.errors import ArtifactError, InputError

if TYPE_CHECKING:
    from medsae.encode.base import Encoder
    from medsae.encode.store import EmbeddingStore

ENTRY_POINT_GROUP = "medsae.encoders"
# Options that change how an encoder runs but not what it computes (kept out of stage keys).
RUNTIME_OPTIONS = frozenset({"device", "allow_network", "timeout"})


@dataclass(frozen=True)
class EncoderInfo:
    """One row of ``medsae encoders``."""

    name: str
    dim: str
    available: bool
    note: str
    summary: str
    source: str


@dataclass(frozen=True)
class _Entry:
    name: str
    factory: Callable[..., Any]
    summary: str
    dim: str
    availability: Callable[[], tuple[bool, str]] | None
    source: str


def _efficientnet(**options: Any) -> Encoder:
    from medsae.encode.efficientnet import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(**options)


def _efficientnet_ok() -> tuple[bool, str]:
    from medsae.encode.efficientnet import availability

    return availability()


def _dinov3(**options: Any) -> Encoder:
    from medsae.encode.dinov3 import DINOv3Encoder

    return DINOv3Encoder(**options)


def _dinov3_ok() -> tuple[bool, str]:
    from medsae.encode.dinov3 import availability

    return availability()


def _random(**options: Any) -> Encoder:
    from medsae.encode.random_init import random_encoder

    return random_encoder(**options)


def _external(**options: Any) -> Encoder:
    from medsae.encode.external import ExternalEncoder

    return ExternalEncoder(**options)


def _signature_of(name: str) -> Callable[..., Any]:
    """The callable whose signature documents the options of a built-in encoder."""
    if name == "efficientnet-lite0":
        from medsae.encode.efficientnet import EfficientNetLite0Encoder

        return EfficientNetLite0Encoder
    if name == "dinov3":
        from medsae.encode.dinov3 import DINOv3Encoder

        return DINOv3Encoder
    if name == "random":
        from medsae.encode.random_init import random_encoder

        return random_encoder
    from medsae.encode.external import ExternalEncoder

    return ExternalEncoder


BUILTIN: dict[str, _Entry] = {
    "efficientnet-lite0": _Entry(
        "efficientnet-lite0",
        _efficientnet,
        "EfficientNet-Lite0, ImageNet-pretrained (offline default)",
        "1280",
        _efficientnet_ok,
        "built-in",
    ),
    "dinov3": _Entry(
        "dinov3",
        _dinov3,
        "DINOv3 ViT (transformers), CLS or mean-patch pooling",
        "384-4096 (by size)",
        _dinov3_ok,
        "built-in",
    ),
    "random": _Entry(
        "random",
        _random,
        "seeded random init of a named architecture (baseline)",
        "by arch",
        None,
        "built-in",
    ),
    "external": _Entry(
        "external",
        _external,
        "out-of-process adapter (e.g. BiomedParse, 1536)",
        "from adapter",
        None,
        "built-in",
    ),
}


def _entry_points() -> dict[str, _Entry]:
    found: dict[str, _Entry] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            continue
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not break the others
            found[ep.name] = _Entry(
                ep.name,
                _broken(ep.name, e),
                f"failed to load: {e}",
                "?",
                lambda: (False, "import failed"),
                ep.value,
            )
            continue
        doc = (inspect.getdoc(obj) or "").strip().splitlines()
        summary = str(getattr(obj, "summary", None) or (doc[0] if doc else ""))
        avail = getattr(obj, "availability", None)
        found[ep.name] = _Entry(
            ep.name,
            obj,
            summary,
            str(getattr(obj, "dim", "?")),
            avail if callable(avail) else None,
            ep.value,
        )
    return found


def _broken(name: str, err: Exception) -> Callable[..., Any]:
    def factory(**_: Any) -> Any:
        raise InputError(name, f"the encoder plugin failed to import: {err}")

    return factory


def _all() -> dict[str, _Entry]:
    return {**BUILTIN, **_entry_points()}


def list_encoders() -> list[EncoderInfo]:
    """Every known encoder with its dimension and whether it can run here (loads no weights)."""
    out = []
    for entry in _all().values():
        ok, note = True, ""
        if entry.availability is not None:
            try:
                ok, note = entry.availability()
            except Exception as e:  # availability checks are advisory
                ok, note = False, str(e)
        out.append(EncoderInfo(entry.name, entry.dim, bool(ok), note, entry.summary, entry.source))
    return out


def accepted_options(name: str) -> list[str] | None:
    """Option names an encoder accepts (None when it accepts anything)."""
    entries = _all()
    if name not in entries:
        return None
    target = _signature_of(name) if name in BUILTIN else entries[name].factory
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "self" and not p.name.startswith("_")]


def get_encoder(name: str, /, **options: Any) -> Encoder:
    """Build encoder ``name`` with ``options`` (see ``medsae encoders`` and docs/encoders.md).

    Raises :class:`InputError` for an unknown name (listing the known ones), an option the
    encoder does not take (listing the ones it does), or missing weights (saying how to get them).
    """
    entries = _all()
    if name not in entries:
        raise InputError(name, f"unknown encoder; known encoders: {', '.join(sorted(entries))}")
    accepted = accepted_options(name)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InputError(
                f"encoder {name}",
                f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}",
            )
    return entries[name].factory(**options)  # type: ignore[no-any-return]


def takes_option(name: str, option: str) -> bool:
    """Whether encoder ``name`` accepts ``option`` (True for encoders taking any option)."""
    accepted = accepted_options(name)
    return accepted is None or option in accepted


def encoder_from_store(store: EmbeddingStore, **runtime: Any) -> Encoder:
    """Rebuild the encoder that wrote ``store`` (same registry name and options).

    ``runtime`` options such as ``device="cpu"`` may be added. Raises :class:`ArtifactError`
    when the store does not record its encoder, or when the rebuilt encoder's dimension or
    weights fingerprint differ from what the store records.
    """
    meta = store.meta
    reg, options = meta.get("registry_name"), meta.get("options")
    if not reg or options is None:
        raise ArtifactError(
            f"{store.folder}: the store does not record how its encoder '{store.encoder}' was built "
            "(not written by `medsae encode`); cannot rebuild it"
        )
    extra = {k: v for k, v in runtime.items() if takes_option(reg, k)}
    enc = get_encoder(reg, **dict(options), **extra)
    if enc.dim != store.dim:
        raise ArtifactError(
            f"{store.folder}: rebuilt encoder '{reg}' gives dimension {enc.dim}, store has {store.dim}"
        )
    recorded = meta.get("weights_fingerprint")
    now = enc.metadata().get("weights_fingerprint")
    if recorded and now and recorded != now:
        raise ArtifactError(
            f"{store.folder}: the weights of encoder '{reg}' changed since the store was written "
            f"({now} != {recorded}); re-run `medsae encode`"
        )
    return enc
