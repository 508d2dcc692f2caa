"""The recommendations route served ahead of FastAPI's router: same answers, less framework.

``GET /v1/customers/{customer_id}/recommendations`` is the route storefronts call on every
page view. Through FastAPI it pays the exception middleware, the router's matching, the
request/response wrappers, dependency solving and response rendering: on this machine about
as much CPU as the recommendation itself. This pure ASGI middleware (inside the latency
middleware, so timing and the route's metrics are unchanged) answers it directly:

- it validates the same ``RecQuery`` model and calls the same ``recommend_for`` as the
  FastAPI route (serving/routes/recommendations.py), which renders the answer's JSON
  (serving/render.py), so the bytes are the route's (tests/serving/test_hot_path.py);
- anything but a plain 200 — invalid parameters, an unknown item or category, any error —
  is handed to FastAPI, which answers it again with its own validation and error handlers,
  so error bodies and status codes are FastAPI's by construction.

``PATRON_HOT_PATH=false`` turns it off (the FastAPI route then serves everything). The route
stays documented in OpenAPI either way; FastAPI's own OpenTelemetry spans (when a provider is
configured) do not cover requests answered here.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import ServingError
from serving.routes import leaf_routes
from serving.routes.recommendations import recommend_for
from serving.routes.schemas import RecQuery

ROUTE = "/v1/customers/{customer_id}/recommendations"
_PATH = re.compile(r"^/v1/customers/([^/]+)/recommendations$")


def query_params(query_string: bytes) -> dict[str, str]:
    """The query as Starlette's QueryParams reads it (``parse_qsl`` of the latin-1 text,
    blank values kept, a repeated parameter: the last value); split directly when nothing
    in it needs decoding (no ``%``, no ``+``), the usual case."""
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    out = {}
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[name] = value
    return out


class HotRecommendations:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("root_path")
            and (m := _PATH.match(scope["path"])) is not None
            and await self._serve(scope, send, m.group(1))
        ):
            return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, send: Send, customer_id: str) -> bool:
        """Answer a valid request with 200; False = leave it to FastAPI."""
        app = scope.get("app")
        svc = getattr(getattr(app, "state", None), "services", None)
        if svc is None:  # not started (or not the app this was built for)
            return False
        params: dict[str, Any] = query_params(scope["query_string"])
        params["customer_id"] = customer_id
        try:
            q = RecQuery.model_validate(params)
            body = await recommend_for(svc, q)
        except (ValidationError, HTTPException, ServingError):
            return False  # FastAPI answers it again: its 4xx/5xx bodies, its handlers
        scope["route"] = self._route_of(app)  # the latency middleware labels by template
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True

    def _route_of(self, app: Any) -> Any:
        if self._route is None:
            routes = leaf_routes(app.router.routes)
            self._route = next(r for r in routes if getattr(r, "path", "") == ROUTE)
        return self._route
