"""Run the API under a real uvicorn in its own process (used by test_uvicorn.py).

Same as ``patron serve`` (uvloop + httptools) but builds the app here so that, until
features/online.py lands in main, the test fake store can be injected.
"""

from __future__ import annotations

import sys

import uvicorn

from serving.app import create_app
from tests.serving.helpers import async_store_factory

if __name__ == "__main__":
    port = int(sys.argv[1])
    app = create_app(store_factory=async_store_factory())
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
