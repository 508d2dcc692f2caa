"""Per-node pipelines on Redis Cluster (features.online_pipeline.py): the packing is
redis-py's byte for byte; a stale slot map is corrected through the client (real cluster)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from features.online_pipeline import Tail, pack, run_async, run_sync
from patron.redis_connect import connect_async
from tests.services import redis_client


@pytest.mark.parametrize(
    "command",
    [
        ("EVALSHA", "ab" * 20, 3, "ns:{7}:current", "ns:{7}:v:1:c:7", "ns:{7}:rt:recent:c1"),
        ("HSET", "k", "café ☕", b"\x00\xffraw", -17, 0, 2**40),
        ("ZADD", "z", 1733000000.123456, "i1", 0.1, "i2", -2.5e-7, "i3", 1e22),
        ("PING",),
    ],
)
def test_pack_is_what_redis_py_sends(command: tuple[object, ...]) -> None:
    conn = Connection()
    assert pack([command]) == b"".join(conn.pack_command(*command))
    assert pack([command, command]) == b"".join(conn.pack_commands([command, command]))


@pytest.mark.parametrize("bad", [True, None, [1], 1j])
def test_pack_refuses_what_redis_py_would_not_send(bad: object) -> None:
    with pytest.raises(TypeError, match="cannot send"):
        pack([("SET", "k", bad)])


def keyed(n: int) -> list[tuple[int, tuple[object, ...]]]:
    keys = [f"t:{{s{i}}}:k" for i in range(n)]
    return [(key_slot(k.encode()), ("INCRBY", k, i + 1)) for i, k in enumerate(keys)]


@pytest.mark.redis
def test_a_stale_slot_map_is_corrected_through_the_client(redis_cluster_srv) -> None:  # type: ignore[no-untyped-def]
    """Every command's slot is mapped to a wrong primary: each node answers MOVED, the
    commands go again through the client, and each is applied once, on the right node."""
    url = redis_cluster_srv.url
    sync = redis_client(url)
    commands = keyed(12)
    for _, (_, key, _) in commands:
        sync.delete(key)

    def scramble(client) -> dict[int, list[object]]:  # type: ignore[no-untyped-def]
        nm = client.nodes_manager
        primaries = [n for n in nm.nodes_cache.values() if n.server_type == "primary"]
        saved = {}
        for slot, _ in commands:
            right = nm.slots_cache[slot][0]
            saved[slot] = nm.slots_cache[slot]
            nm.slots_cache[slot] = [next(p for p in primaries if p.name != right.name)]
        return saved

    scramble(sync)
    replies, tails = run_sync(sync, commands, Tail(("PING",)))
    assert replies == [i + 1 for i in range(12)]
    assert any(isinstance(t, Exception) for t in tails)  # re-routed: the tail cannot vouch

    async def run() -> list[object]:
        client = connect_async(url, True)
        try:
            await client.ping()  # initialises the slot map
            scramble(client)
            replies, _ = await run_async(client, commands)
            return replies
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [2 * (i + 1) for i in range(12)]  # applied once more
    fresh = redis_client(url)
    assert [int(fresh.get(k)) for _, (_, k, _) in commands] == [2 * (i + 1) for i in range(12)]
