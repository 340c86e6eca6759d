"""One way for a route to answer a bad request: raise `Refused`; routes built with `RefusalsAsJSON`
answer it as a JSON body with its status, instead of a 500.

Three body shapes, each as the client of those routes expects it: ComfyUI's API error
`{"error": {"type", "message", "details", "extra_info"}, ...}` when a `kind` is given (POST /prompt,
/view, /upload ...), the frontend's `{"error": message}` otherwise (settings, user files, jobs), and
A1111's `{"error": NAME, "detail": message, ...}` with `a1111=NAME` (/sdapi/v1/*, /controlnet/*).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute


class Refused(Exception):
    """A request answered with an error status and a JSON body saying why."""

    def __init__(self, status: int, message: str, *, kind: str | None = None, details: str = "",
                 a1111: str | None = None, **body: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        if a1111 is not None:  # A1111's shape: the error's name, and the message as "detail"
            self.body = {"error": a1111, "detail": message, **body}
            return
        error: Any = message if kind is None else {"type": kind, "message": message, "details": details,
                                                    "extra_info": {}}
        self.body = {"error": error, **body}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status)


class RefusalsAsJSON(APIRoute):
    """Routes whose `Refused` becomes its JSON response."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as refused:
                return refused.response()

        return answer
