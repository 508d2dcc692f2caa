"""The service fixtures themselves: a real redis-server answers and can be stopped/started."""

from __future__ import annotations

import redis

from tests.services import RedisServer


def test_redis_fixture_is_real_and_restartable(redis_srv: RedisServer, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("patron:probe", "1")
    assert client.get("patron:probe") == b"1"
    assert "redis_version" in client.info("server")
    redis_srv.stop()
    try:
        client.ping()
        raise AssertionError("ping succeeded while redis-server was stopped")
    except redis.ConnectionError:
        pass
    redis_srv.start()
    assert redis.Redis.from_url(redis_url).ping() is True
