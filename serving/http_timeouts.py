"""uvicorn's httptools protocol with a header-read timeout (uvicorn has none).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a
connection that opens and never completes its request headers (a half-open or slowloris
client) is held until the client goes away: 1,500 of them held 1,500 sockets, file
descriptors and protocol objects of one worker. Here every request's headers must arrive
within ``PATRON_HEADER_TIMEOUT_S`` of the connection opening, or of the first byte of the next
request on a keep-alive connection; otherwise the connection is closed (no response: the
client has not sent a request to answer). The request body and the response are not timed
here; a body is bounded by the size limits of the routes.

This is the one place that reaches into uvicorn's protocol class (``patron serve`` passes it
as uvicorn's ``http`` option); tests/serving/test_http_timeouts.py holds a real server to it.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.settings import get_serving_settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes a connection whose request headers are not complete in time."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a keep-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = get_serving_settings().header_timeout_s
        self._header_timer = self.loop.call_later(timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
