"""The embedded default for online features: an in-process server speaking the Redis protocol.

Used by ``make demo`` and first runs where no redis-server exists. It keeps everything in the
memory of one process; production and the test suite use a real redis-server.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("patron.embedded_redis")


def _handler_class() -> type:
    """fakeredis' TCP handler closes the connection after any error reply; a real Redis keeps
    it open (clients rely on that, e.g. EVALSHA -> NOSCRIPT -> SCRIPT LOAD on one connection).
    This handler answers command errors as error replies and keeps the connection."""
    import redis
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class KeepAliveHandler(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            client = self.current_client
            original = client.read_response

            def read_response(*args: Any, **kwargs: Any) -> Any:
                try:
                    return original(*args, **kwargs)
                except redis.ResponseError as exc:
                    return exc  # encoded as "-ERR ..." by the handler

            client.read_response = read_response  # type: ignore[method-assign]

    return KeepAliveHandler


def serve(host: str = "127.0.0.1", port: int = 6390) -> None:
    """Serve the Redis protocol on host:port until interrupted (blocking)."""
    from fakeredis import TcpFakeServer

    server = TcpFakeServer((host, port), server_type="redis")
    server.RequestHandlerClass = _handler_class()
    log.info("embedded redis-protocol server on %s:%d (in-memory, not for production)", host, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
