"""HTTP routes: thin handlers over serving.service; domain errors become HTTP errors here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
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

    app.add_exception_handler(StarletteHTTPException, method_not_allowed)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(ReloadRefused, refused)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(NotReady, unavailable)
