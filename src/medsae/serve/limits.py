"""The browser's limits: what an upload may be and decode to, how many heavy requests run
at once (:class:`ServeLimits`), and the ASGI middleware that refuses request bodies above
the size limit with 413 JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from medsae.data.query_limits import MiB, QueryLimits
from medsae.errors import InputError

UPLOAD_LIMIT = 20 * 1024 * 1024
HEAVY_WORKERS = 4  # uploads and feature maps computed at once
HEAVY_WAIT_S = 15.0  # how long a request waits for a turn before a 503


@dataclass(frozen=True)
class ServeLimits:
    """What the browser accepts: the upload size before decompression (``upload_limit``,
    bytes), what a file may decode to (:class:`QueryLimits`), and how many uploads and
    feature maps are computed at once (``heavy_workers``; others wait ``heavy_wait_s``
    seconds for a turn, then get 503)."""

    upload_limit: int = UPLOAD_LIMIT
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    heavy_workers: int = HEAVY_WORKERS
    heavy_wait_s: float = HEAVY_WAIT_S

    @classmethod
    def from_options(
        cls,
        upload_mib: float | None = None,
        max_decompressed_mib: float | None = None,
        max_pixels: int | None = None,
        max_voxels: int | None = None,
        heavy_workers: int | None = None,
        heavy_wait_s: float | None = None,
    ) -> ServeLimits:
        """The limits from ``medsae serve``'s options (None: the default); a value that is not
        positive is an :class:`InputError` naming the option."""
        given = {
            "--upload-mib": upload_mib,
            "--max-decompressed-mib": max_decompressed_mib,
            "--max-pixels": max_pixels,
            "--max-voxels": max_voxels,
            "--heavy-workers": heavy_workers,
            "--heavy-wait-s": heavy_wait_s,
        }
        for option, value in given.items():
            if value is not None and not value > 0:
                raise InputError(f"{option} {value}", "must be a positive number")
        q = QueryLimits()
        return cls(
            upload_limit=UPLOAD_LIMIT if upload_mib is None else int(upload_mib * MiB),
            query_limits=QueryLimits(
                max_decompressed_bytes=q.max_decompressed_bytes
                if max_decompressed_mib is None
                else int(max_decompressed_mib * MiB),
                max_pixels=q.max_pixels if max_pixels is None else max_pixels,
                max_voxels=q.max_voxels if max_voxels is None else max_voxels,
            ),
            heavy_workers=HEAVY_WORKERS if heavy_workers is None else heavy_workers,
            heavy_wait_s=HEAVY_WAIT_S if heavy_wait_s is None else heavy_wait_s,
        )

    def app_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`medsae.serve.app.create_app`."""
        return {
            "upload_limit": self.upload_limit,
            "query_limits": self.query_limits,
            "heavy_workers": self.heavy_workers,
            "heavy_wait_s": self.heavy_wait_s,
        }


Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse bodies larger than ``limit`` bytes (declared by Content-Length or streamed).

    A declared length above the limit is refused before anything is read; a streamed body
    is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        # multipart framing adds a little around the file itself
        self.allowed = limit + 64 * 1024

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.allowed
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await _send_json(send, 413, f"request body larger than {self.limit} bytes")
                return
        received = 0
        started = False
        overflow = False

        async def counting_receive() -> Message:
            nonlocal received, overflow
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.allowed:
                    overflow = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            # a body parser may turn the overflow into its own error: answer 413 instead
            nonlocal started
            if overflow:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, 413, f"request body larger than {self.limit} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"request body larger than {self.limit} bytes")


async def _send_json(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HeavyWork:
    """At most ``workers`` requests doing heavy work (decoding and encoding an upload,
    computing a feature map) at once; a request waits up to ``wait_s`` seconds for a turn,
    then is answered 503 with ``Retry-After`` (never a partial or wrong answer)."""

    def __init__(self, workers: int, wait_s: float) -> None:
        import threading

        if workers < 1:
            raise ValueError(f"heavy workers must be at least 1, got {workers}")
        self.workers = workers
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(workers)

    def __enter__(self) -> HeavyWork:
        if not self._slots.acquire(timeout=self.wait_s):
            from fastapi import HTTPException

            raise HTTPException(
                503,
                f"the server is busy ({self.workers} heavy requests running); retry shortly",
                headers={"Retry-After": str(max(1, round(self.wait_s)))},
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._slots.release()
