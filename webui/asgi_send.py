"""Minimal ASGI answers for the layers in front of the app (request checks, authentication)."""
from __future__ import annotations

import json
from typing import Callable


async def send_response(send: Callable, status: int, body: bytes, content_type: str,
                        extra_headers: list | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Callable, status: int, detail: str, extra_headers: list | None = None) -> None:
    await send_response(send, status, json.dumps({"detail": detail}).encode(), "application/json", extra_headers)


async def refuse(scope: dict, receive: Callable, send: Callable, status: int, ws_code: int, message: str,
                 extra_headers: list | None = None) -> None:
    """An HTTP error answer, or for a websocket a close before accepting (the server answers 403)."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": ws_code, "reason": message[:120]})
        return
    await send_json(send, status, message, extra_headers)


def headers_of(scope: dict) -> dict[str, str]:
    # Repeated headers: the last one wins, which is enough for the ones read here.
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
