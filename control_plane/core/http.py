"""HTTP plumbing shared by every router: dependencies, request ids and error mapping.

Routers declare what they need with the ``Annotated`` aliases here (``Conn``,
``RequestId``, ``SettingsDep``, ``Limit``, ``Offset``), and who may call them with
``access.http.require(permission)``; errors from any layer become one JSON shape in
``install_error_handlers``.
"""

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.core.db import DbConnection
from control_plane.core.errors import (
    InvalidInputError,
    ServiceUnavailableError,
    SovereignError,
)
from control_plane.core.settings import Settings

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


# Dependencies that only read request or app state are ``async``: FastAPI runs a sync
# dependency in the thread pool, a hop that costs more than the work under load.


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


#: How long the event loop itself may wait for a pooled connection that the pool's
#: statistics said was idle (another request can take it first); then a worker thread waits.
_IDLE_CONNECTION_WAIT_SECONDS = 0.001
_CONNECTION_WAIT_SECONDS = 5.0


async def get_conn(request: Request) -> AsyncIterator[DbConnection]:
    """Lend one pooled connection for the request; services open transactions on it.

    ``async`` although the pool is synchronous: taking an idle connection and giving back
    one that has no transaction open cost no I/O, so they run on the event loop instead of
    costing two hops through the thread pool per request. Waiting for a busy pool, and
    giving back a connection with a transaction still open (which rolls it back), happen
    in a worker thread.
    """
    pool: ConnectionPool[DbConnection] = request.app.state.pool
    conn: DbConnection | None = None
    if pool.get_stats().get("pool_available", 0) > 0:
        with contextlib.suppress(PoolTimeout):
            conn = pool.getconn(timeout=_IDLE_CONNECTION_WAIT_SECONDS)
    if conn is None:
        try:
            conn = await run_in_threadpool(pool.getconn, _CONNECTION_WAIT_SECONDS)
        except PoolTimeout as exc:
            raise ServiceUnavailableError("no database connection became free in time") from exc
    try:
        yield conn
    finally:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            pool.putconn(conn)
        else:
            await run_in_threadpool(pool.putconn, conn)


async def get_request_id(request: Request) -> str:
    """The request's id (from ``X-Request-ID`` when the caller sent a sane one)."""
    request_id: str = request.state.request_id
    return request_id


Conn = Annotated[DbConnection, Depends(get_conn)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RequestId = Annotated[str, Depends(get_request_id)]
#: Page size and start for list routes: at most 500 items a page.
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (at most 500).")]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]


def _field_name(loc: tuple[int | str, ...], error_type: str) -> str:
    if error_type == "json_invalid":
        return "body"  # the location is a character offset, not a field
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields: list[dict[str, Any]] = [
        {
            "field": _field_name(tuple(err["loc"]), err["type"]),
            "message": err["msg"].removeprefix("Value error, "),
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    body = {"error": {"code": "invalid_input", "message": message, "details": {"fields": fields}}}
    return JSONResponse(status_code=422, content=body)


_HTTP_CODES = {
    401: "not_authenticated",
    404: "not_found",
    405: "method_not_allowed",
}


def _http_error(_: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in our error shape."""
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "error": {
            "code": _HTTP_CODES.get(exc.status_code, "http_error"),
            "message": str(exc.detail),
            "details": {},
        }
    }
    return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)


def _sovereign_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SovereignError)
    if exc.status_code >= 500:
        log.error("request %s failed: %s", request.state.request_id, exc.message)
    return JSONResponse(status_code=exc.status_code, content=exc.to_body(), headers=exc.headers)


def _unstorable_value(request: Request, exc: Exception) -> Response:
    """Safety net for values validation let through but PostgreSQL cannot store."""
    log.warning("request %s: unstorable value: %s", request.state.request_id, exc)
    body = InvalidInputError(
        "a value in the request cannot be stored (a NUL character, or a number out of range)",
        details={"request_id": request.state.request_id},
    ).to_body()
    return JSONResponse(status_code=422, content=body)


def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in request %s", request.state.request_id, exc_info=exc)
    body = SovereignError(
        "internal error; the request id identifies it in the server log",
        details={"request_id": request.state.request_id},
    ).to_body()
    return JSONResponse(status_code=500, content=body)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to ``{"error": {"code", "message", "details"}}`` with its status."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(SovereignError, _sovereign_error)
    app.add_exception_handler(psycopg.DataError, _unstorable_value)
    app.add_exception_handler(Exception, _unexpected_error)


class RequestIdMiddleware:
    """Give each request an id, echo it back, and let the audit log record it.

    A plain ASGI middleware (not ``BaseHTTPMiddleware``, which costs a task group and
    memory streams per request): an incoming ``X-Request-ID`` that looks safe is kept,
    anything else is replaced by a fresh UUID; ``request.state.request_id`` holds it.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Tag the request and its response start with the id."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        await self.app(scope, receive, tagged)
