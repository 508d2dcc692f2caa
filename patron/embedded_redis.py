"""The embedded default for online features: an in-process server speaking the Redis protocol.

Used by ``make demo`` and first runs where no redis-server exists. It keeps everything in the
memory of one process; production and the test suite use a real redis-server.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("patron.embedded_redis")


def serve(host: str = "127.0.0.1", port: int = 6390) -> None:
    """Serve the Redis protocol on host:port until interrupted (blocking)."""
    from fakeredis import TcpFakeServer

    server = TcpFakeServer((host, port), server_type="redis")
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
