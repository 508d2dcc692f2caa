"""HTTP routes: thin handlers over serving.service; domain errors become HTTP errors here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serving.errors import NotFound, NotReady, ReloadRefused, Unavailable


def leaf_routes(routes: Any) -> Iterator[Any]:
    """Every endpoint route, through included routers (FastAPI wraps them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner.routes)
        else:
            yield route


def install_error_handlers(app: FastAPI) -> None:
    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        """Starlette lists only the first matching route's methods in ``Allow``; a path served
        by several routes (GET and PUT /admin/rules) must list them all."""
        if not isinstance(exc, StarletteHTTPException) or exc.status_code != 405:
            return await http_exception_handler(request, exc)  # type: ignore[arg-type]
        allowed: set[str] = set()
        for route in leaf_routes(request.app.router.routes):
            methods = getattr(route, "methods", None)
            if methods and route.matches(request.scope)[0] != Match.NONE:
                allowed |= set(methods)
        headers = {"Allow": ", ".join(sorted(allowed))} if allowed else exc.headers
        return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        """FastAPI's 422 body without what was sent: each error's type, location and message.
        The default handler echoes every rejected value (``input``, ``ctx``), which may be
        personal data, and failed with a 500 on a bare NaN or Infinity in a JSON body, which
        Python's parser accepts and the response cannot hold. A body that is not JSON at all
        is a 400, as documented."""
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "the body is not valid JSON"}, status_code=400)
        detail = [
            {"type": str(e.get("type", "")), "loc": list(e.get("loc", ())), "msg": str(e["msg"])}
            for e in errors
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, method_not_allowed)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(ReloadRefused, refused)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(NotReady, unavailable)
