"""One Spark session in local mode (``local[2]``) for every Spark test: a JVM start costs
seconds, so the session is shared. Without PySpark or Java the tests skip, unless
PATRON_REQUIRE_SERVICES=1 (CI), where they fail."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.spark


def _missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "PySpark is not installed (pip install 'patron[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (openjdk-17-jre-headless)"
    return None


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    why = _missing()
    if why is not None:
        if os.environ.get("PATRON_REQUIRE_SERVICES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    from patron.spark import spark_session

    with spark_session("local[2]", {"spark.sql.shuffle.partitions": "4"}, "patron-tests") as s:
        yield s
