"""Out-of-process encoders: an adapter command speaks a small file-based protocol (version 1).

The adapter runs in its own environment (for example BiomedParse's), so medsae never
imports its dependencies. It is called as ``COMMAND... REQUEST.json``; the request is a
JSON object::

    {"protocol": 1, "action": "describe" | "encode", "response": "/abs/response.json",
     "options": {...adapter options...},
     # "encode" only:
     "images": "/abs/images.npy", "out_dir": "/abs/dir", "batch_size": 16,
     "shards": [{"file": "shard-00000.npy", "start": 0, "stop": 4096}, ...]}

``describe`` writes to ``response``: ``{"protocol": 1, "name", "dim", "input_size",
"preprocessing": {...}, "weights_fingerprint"}``. ``encode`` memory-maps ``images`` (uint8
``(N, S, S)`` or ``(N, S, S, 3)``), and for each shard writes ``out_dir/<file>``: a ``.npy``
float32 ``(stop - start, dim)`` whose row ``r`` embeds image ``start + r``, first under a
name starting with ``.`` and then renamed (so a half-written shard is never seen); then it
writes ``{"protocol": 1, "dim", "shards": [files]}`` to ``response``. Exit status 0 means
success; anything the adapter prints goes to the user's terminal. See docs/encoders.md.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medsae.data.io import IMAGES_FILE
from medsae.encode.base import check_images
from medsae.encode.store import Shard, shard_header, shard_name
from medsae.errors import ArtifactError, InputError
from medsae.workspace import safe_name

PROTOCOL = 1


def _command_list(command: str | Sequence[str]) -> list[str]:
    parts = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if not parts:
        raise InputError(
            "command", "the external encoder needs a command (--option command='python adapter.py')"
        )
    return parts


class ExternalEncoder:
    """An encoder implemented by an adapter command (see the module docstring for the protocol).

    Parameters
    ----------
    command:
        The adapter command line (a string split like a shell would, or a list), e.g.
        ``"/opt/biomedparse/env/bin/python -m medsae_biomedparse_adapter"``.
    timeout:
        Seconds allowed for ``describe`` (encoding has no limit).
    device:
        Forwarded to the adapter in ``options`` unless ``auto``.
    **adapter_options:
        Anything else is forwarded to the adapter in ``options`` (e.g. ``checkpoint=...``).
    """

    registry_name = "external"

    def __init__(
        self,
        command: str | Sequence[str] = "",
        timeout: float = 600.0,
        device: str = "auto",
        **adapter_options: Any,
    ) -> None:
        self.command = _command_list(command)
        self.timeout = float(timeout)
        self.adapter_options = dict(adapter_options)
        if device != "auto":
            self.adapter_options["device"] = device
        self.options: dict[str, Any] = {"command": self.command, **dict(adapter_options)}
        info = self._call({"action": "describe"}, timeout=self.timeout)
        try:
            self.dim = int(info["dim"])
            self.input_size = int(info.get("input_size") or 0)
            self.name = safe_name(str(info.get("name") or "external"))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(
                f"adapter {self.command}: bad describe response {info!r}: {e}"
            ) from e
        if self.dim <= 0:
            raise ArtifactError(
                f"adapter {self.command}: reported dimension {self.dim}, expected > 0"
            )
        self.preprocessing = info.get("preprocessing") or {}
        self.weights_fingerprint = info.get("weights_fingerprint")

    def _call(
        self,
        request: dict[str, Any],
        timeout: float | None = None,
        poll: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Run the adapter once with ``request``; returns its JSON response."""
        with tempfile.TemporaryDirectory(prefix="medsae-adapter-") as tmp:
            req_path = Path(tmp) / "request.json"
            resp_path = Path(tmp) / "response.json"
            body = {
                "protocol": PROTOCOL,
                "response": str(resp_path),
                "options": self.adapter_options,
                **request,
            }
            req_path.write_text(json.dumps(body))
            try:
                proc = subprocess.Popen([*self.command, str(req_path)])
            except OSError as e:
                raise InputError(" ".join(self.command), f"cannot start the adapter: {e}") from e
            t0 = time.monotonic()
            try:
                while proc.poll() is None:
                    if poll is not None:
                        poll()
                    if timeout is not None and time.monotonic() - t0 > timeout:
                        raise ArtifactError(
                            f"adapter {' '.join(self.command)}: no answer within {timeout:.0f} s"
                        )
                    time.sleep(0.05)
                if poll is not None:
                    poll()
            except BaseException:
                if proc.poll() is None:  # a failed check or an interrupt stops the adapter too
                    proc.kill()
                    proc.wait()
                raise
            if proc.returncode != 0:
                raise ArtifactError(
                    f"adapter {' '.join(self.command)} failed ({request['action']}) with exit status "
                    f"{proc.returncode}; its output is above"
                )
            if not resp_path.is_file():
                raise ArtifactError(
                    f"adapter {' '.join(self.command)} wrote no response to {resp_path}"
                )
            try:
                resp = json.loads(resp_path.read_text())
            except json.JSONDecodeError as e:
                raise ArtifactError(
                    f"adapter {' '.join(self.command)}: response is not JSON: {e}"
                ) from e
        if int(resp.get("protocol", -1)) != PROTOCOL:
            raise ArtifactError(
                f"adapter {' '.join(self.command)} speaks protocol {resp.get('protocol')}, expected {PROTOCOL}"
            )
        return dict(resp)

    def encode_shards(
        self,
        images_path: Path,
        out_dir: Path,
        shards: Sequence[Shard],
        batch_size: int = 16,
        on_shard: Callable[[Shard], None] | None = None,
    ) -> None:
        """Ask the adapter to write ``shards`` into ``out_dir``; ``on_shard`` is called as each appears."""
        pending = {s.file: s for s in shards}

        def poll() -> None:
            for file in list(pending):
                if (Path(out_dir) / file).is_file():
                    shard = pending.pop(file)
                    if on_shard is not None:
                        on_shard(shard)

        request = {
            "action": "encode",
            "images": str(Path(images_path).resolve()),
            "out_dir": str(Path(out_dir).resolve()),
            "batch_size": int(batch_size),
            "shards": [{"file": s.file, "start": s.start, "stop": s.stop} for s in shards],
        }
        resp = self._call(request, poll=poll)
        if int(resp.get("dim", self.dim)) != self.dim:
            raise ArtifactError(
                f"adapter {' '.join(self.command)}: encoded dimension {resp.get('dim')} != described {self.dim}"
            )
        missing = [s.file for s in shards if shard_header(Path(out_dir) / s.file) is None]
        if missing:
            raise ArtifactError(
                f"adapter {' '.join(self.command)} did not write shard(s) {', '.join(missing[:5])} in {out_dir}"
            )

    def encode(self, images_uint8: np.ndarray) -> np.ndarray:
        """Embeddings ``(B, dim)`` float32 through the adapter (one process start per call)."""
        check_images(images_uint8)
        if len(images_uint8) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="medsae-external-") as tmp:
            images_path = Path(tmp) / IMAGES_FILE
            np.save(images_path, np.ascontiguousarray(images_uint8))
            shard = Shard(shard_name(0), 0, len(images_uint8))
            self.encode_shards(images_path, Path(tmp), [shard])
            out = np.load(Path(tmp) / shard.file).astype(np.float32)
        if out.shape != (len(images_uint8), self.dim):
            raise ArtifactError(
                f"adapter {' '.join(self.command)}: output shape {out.shape}, expected {(len(images_uint8), self.dim)}"
            )
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "registry_name": self.registry_name,
            "options": dict(self.options),
            "weights_fingerprint": self.weights_fingerprint,
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
        }

    def __repr__(self) -> str:
        return f"ExternalEncoder(name={self.name!r}, dim={self.dim}, command={self.command!r})"
