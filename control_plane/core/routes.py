"""How a request body gets in: bounded while it is read, parsed one strict way.

``JsonBodyRoute`` is the one body mechanism of the API. Before its handler runs, the body
is read within the route's size (``DEFAULT_BODY_BYTES`` unless the route's
``openapi_extra`` names another bound under ``core.bodies.MAX_BODY_KEY``; 413 beyond
it), and a JSON body is parsed by ``core.bodies.parse_json`` and checked against the
route's body type in pydantic's strict JSON mode, so a number is a JSON number and a
boolean a JSON boolean (``"gpus": "8"`` is a 422 naming the field, not 8), as the OpenAPI
document says. A hostile body is a 422 naming ``body`` rather than a traceback; a large
one is parsed in a worker thread, so it stalls no other request.

``before_body`` is the hook for what must happen before a byte is read:
``access.http.SecuredRoute`` authenticates the bearer token there, so an anonymous client
can neither make the server hold a large body nor make it parse one. Routes without a
bearer token (the Kubernetes admission webhooks, called by the kube-apiserver) use this
class as it is and get the same body rules.
"""

import email.message
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from control_plane.core.bodies import DEFAULT_BODY_BYTES, MAX_BODY_KEY, parse_json
from control_plane.core.errors import PayloadTooLargeError

#: A body this large is parsed in a worker thread rather than on the event loop.
_THREAD_PARSE_BYTES = 64 * 1024
#: Methods whose requests carry no body worth reading.
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_json(request: Request) -> bool:
    """Whether FastAPI would read the body as JSON (no content type, or ``*/json``, ``*+json``)."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def read_limited(request: Request, limit: int) -> bytes:
    """The request's body, refused as soon as it is known to exceed ``limit`` bytes.

    By ``Content-Length`` before a byte is read, else while the chunks arrive, so a body
    never costs more than ``limit`` bytes of memory. Starlette keeps what was read, so
    later readers of the request see the same body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError.of(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError.of(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body
    return body


def _strict_adapter(route: APIRoute) -> TypeAdapter[Any] | None:
    """The route's body type, as FastAPI validates it, for the strict check (or None)."""
    field = route.body_field
    if field is None:
        return None
    body_type: Any = Annotated[field.field_info.annotation, field.field_info]
    return TypeAdapter(body_type)


def _read_json(body: bytes, strict: TypeAdapter[Any]) -> Any:
    """``body`` parsed by the JSON rules, then checked against ``strict`` in strict JSON mode.

    FastAPI validates the parsed value afterwards in pydantic's lax mode, which coerces
    booleans and numeric strings to numbers; this check refuses such a body first, naming
    the field as FastAPI would (``body.<field>``).
    """
    parsed = parse_json(body)
    try:
        strict.validate_json(body, strict=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None
    return parsed


class JsonBodyRoute(APIRoute):
    """A route that reads its body within a size bound and a JSON body strictly.

    Subclasses put what must come before the body in ``before_body``.
    """

    async def before_body(self, request: Request) -> None:
        """What must happen before a byte of the body is read; nothing here."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, behind ``before_body``, the size bound and the JSON rules."""
        handle = super().get_route_handler()
        strict = _strict_adapter(self)
        limit = int((self.openapi_extra or {}).get(MAX_BODY_KEY, DEFAULT_BODY_BYTES))

        async def handler(request: Request) -> Response:
            await self.before_body(request)
            if request.method not in _NO_BODY_METHODS:
                body = await read_limited(request, limit)
                if body and strict is not None and _is_json(request):
                    parsed = (
                        await run_in_threadpool(_read_json, body, strict)
                        if len(body) > _THREAD_PARSE_BYTES
                        else _read_json(body, strict)
                    )
                    # FastAPI reads request.json(), which Starlette keeps once parsed.
                    request._json = parsed
            return await handle(request)

        return handler
