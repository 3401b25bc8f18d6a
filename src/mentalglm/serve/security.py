"""Limits and authentication: the body-size limit, the API key, and the error body every refusal uses."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import HTTPException, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/", "/healthz", "/readyz"})  # reachable without the API key (probes, the page)
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "request_too_large", 422: "invalid_request_error", 500: "server_error", 502: "backend_error",
               503: "service_unavailable"}


def error_body(status: int, message: str) -> dict[str, Any]:
    """FastAPI's ``detail`` plus the OpenAI ``error`` object, so both kinds of client read the reason."""
    return {"detail": message, "error": {"type": ERROR_TYPES.get(status, "error"), "message": message}}


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: refused on Content-Length, or counted while a chunked body streams.

    Paths under ``exempt`` prefixes (batch uploads) enforce their own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, int(declared))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI re-raises HTTPException from body reading
                    raise HTTPException(413, self._message(received, more=True))
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int, more: bool = False) -> str:
        return (f"request body {'over ' if more else ''}{size} bytes is larger than the limit of {self.max_bytes}; "
                "send fewer posts per request (or start the server with a larger --max-body-bytes)")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        await JSONResponse(error_body(413, self._message(size)), status_code=413)(scope, receive, send)


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY (when the server has an API key)")
_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: KEY (alternative)")


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_key_header)],
) -> None:
    """With a key configured, every route but the probes and the page needs it (jobs routes included)."""
    expected: str | None = request.app.state.api_key
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if expected is None or path in OPEN_PATHS:
        return
    given = bearer.credentials if bearer else header
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                            headers={"WWW-Authenticate": "Bearer"})


