"""HTTP routes: thin handlers over serving.service; domain errors become HTTP errors here."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serving.errors import NotFound, NotReady, ReloadRefused, Unavailable


def install_error_handlers(app: FastAPI) -> None:
    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    async def refused(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(ReloadRefused, refused)
    app.add_exception_handler(Unavailable, unavailable)
    app.add_exception_handler(NotReady, unavailable)
