"""One device setting for every stage that runs a model.

Each such stage config (encode, train, codes, evaluate, interpret, report; the browser's
``serve``) has a ``device`` field made by :func:`device_field`: ``auto`` (the first CUDA
device when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. A stage resolves
it with :func:`resolve_device` before any work, so asking for CUDA on a machine without one
fails at once with :class:`DeviceUnavailable`, naming the setting.

The device is a *runtime* field: it is recorded in the artifact's manifest (``runtime``,
with the resolved device from :func:`describe_device`) but kept out of the artifact key
(:meth:`medsae.config.StageConfig.key_config`), so an artifact never turns stale only
because it was built on another device. torch is imported only when a device is resolved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from medsae.errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "MEDSAE_DEVICE"
"""Environment variable naming what ``auto`` means on this machine (e.g. ``cpu`` on a GPU
machine whose GPU is busy; the test suite sets it to ``cpu``)."""
DEVICE_HELP = (
    "Where models run: 'auto' (the first CUDA device when present, else the CPU; "
    f"${DEVICE_ENV} overrides it), 'cpu', 'cuda' or 'cuda:N'. Recorded in the manifest, not "
    "part of the artifact key."
)


class DeviceUnavailable(InputError):
    """A device was asked for that this machine does not have (e.g. CUDA without a GPU)."""


def device_field(default: str = "auto") -> Any:
    """The ``device`` field of a stage config (a runtime field: out of the artifact key)."""
    return Field(default=default, description=DEVICE_HELP, json_schema_extra={"runtime": True})


def resolve_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``auto`` -> ``$MEDSAE_DEVICE`` when set, else ``cuda`` when available, else ``cpu``;
    otherwise the device as given.

    Raises :class:`InputError` for a name torch does not know and :class:`DeviceUnavailable`
    for a CUDA device this machine lacks (no CUDA, or an index past the last GPU); ``what``
    names the setting in the message (e.g. ``train.device``).
    """
    import os

    import torch

    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        chosen = os.environ.get(DEVICE_ENV, "").strip()
        if chosen and chosen != "auto":
            return resolve_device(chosen, f"{what} (auto, from ${DEVICE_ENV})")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise InputError(
                what, f"unknown device {device!r}; use auto, cpu, cuda or cuda:N"
            ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                what, f"{str(device)!r} requested but no CUDA device is available"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                what,
                f"{str(device)!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)",
            )
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise InputError(what, f"unsupported device {str(device)!r}; use auto, cpu or cuda[:N]")
    return dev


def describe_device(dev: torch.device) -> dict[str, Any]:
    """What a manifest records of the device a stage ran on."""
    import torch

    out: dict[str, Any] = {"resolved_device": str(dev), "torch": torch.__version__}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        out["device_name"] = torch.cuda.get_device_name(index)
        out["cuda"] = torch.version.cuda
    return out


def configure_cuda(dev: torch.device, *, tf32: bool = False, benchmark: bool = True) -> None:
    """Backend settings of a CUDA run: ``cudnn.benchmark`` (the fastest convolution algorithms
    for fixed input shapes) and, when asked, TF32 matrix products and convolutions (faster,
    about 1e-3 relative error instead of fp32's 1e-7). Nothing changes on other devices."""
    import torch

    if dev.type != "cuda":
        return
    torch.backends.cudnn.benchmark = benchmark
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
