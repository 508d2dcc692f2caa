"""Commands sent as one pipeline per Redis node: on a cluster routed by the client's slot map.

redis-py's ``ClusterPipeline`` works out every queued command's policy, slot and node again
(tens of microseconds of client CPU per command; ``benchmarks/cluster_calls.py`` measures it
against this module in the same run), although the online store knows each call's slot when
it plans the call. Here each node gets its commands on one of its own pooled connections,
packed once (``pack``: redis-py's bytes at a fifth of the cost), written at once and read
back in order under one timeout. A pipeline can end with a command of its own (a ``Tail``:
``WAIT`` must run on the connection that did the writes, and may block on the server, so the
read timeout grows by its wait); on a single node the async client's pipeline is sent the
same way for that reason.

On a cluster, whatever the slot map no longer routes right (a MOVED or ASK reply during a
resharding or a failover, TRYAGAIN, a connection error, a client not yet initialised) is sent
again command by command through the client's own ``execute_command``, which follows
redirections and refreshes the slot map. This is the one module that uses redis-py's
internals (``nodes_manager.get_node_from_slot``, the cluster nodes' and the pool's
connections); tests/features/test_online_pipeline.py checks the packing byte for byte and the
re-routing on a real cluster, tests/features/test_online.py runs it all on both topologies.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = tuple[int, tuple[Any, ...]]  # (slot, command and arguments)


@dataclass(frozen=True)
class Tail:
    """A command ending every node's pipeline, e.g. ``("WAIT", 1, 50)``, and how long it
    may block on the server."""

    command: tuple[Any, ...]
    blocks_s: float = 0.0


# replies that mean "send this again through the client" (it re-routes and refreshes)
_REROUTE = (
    AskError,
    MovedError,
    TryAgainError,
    ClusterDownError,
    RedisConnectionError,
    RedisTimeoutError,
)


def _by_node(client: Any, commands: Sequence[Command]) -> dict[str, tuple[Any, list[int]]]:
    """Positions of the commands per primary node (by the client's current slot map)."""
    nodes: dict[str, tuple[Any, list[int]]] = {}
    get = client.nodes_manager.get_node_from_slot
    for pos, (slot, _) in enumerate(commands):
        node = get(slot)
        entry = nodes.get(node.name)
        if entry is None:
            entry = nodes[node.name] = (node, [])
        entry[1].append(pos)
    return nodes


def _stray(reply: Any) -> bool:
    """A reply that means the slot map routed the command wrong (or not at all)."""
    return isinstance(reply, (*_REROUTE, RedisClusterException))


def _plan(
    client: Any, commands: Sequence[Command]
) -> tuple[list[Any], list[tuple[Any, list[int]]]]:
    """The replies to fill (or, when the slot map cannot route, that error for every
    command: the client routes them) and each node's command positions."""
    try:
        return [None] * len(commands), list(_by_node(client, commands).values())
    except RedisClusterException as exc:  # e.g. a slot not covered
        return [exc] * len(commands), []


def _merge(
    replies: list[Any],
    groups: list[tuple[Any, list[int]]],
    outs: list[list[Any]],
    tail: Tail | None,
) -> tuple[list[Any], list[int]]:
    """Each node's replies put in place; returns the tails' replies and the positions to
    send again through the client."""
    tails: list[Any] = []
    for (_, positions), out in zip(groups, outs, strict=True):
        for pos, reply in zip(positions, out, strict=False):
            replies[pos] = reply
        if tail is not None:
            tails.append(out[-1])
    again = [p for p, r in enumerate(replies) if _stray(r)]
    if again and tail is not None:  # a tail says nothing of a command sent elsewhere
        tails.append(RedisClusterException("a command was re-routed"))
    return tails, again


def _sync_node(client: Any, node: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    pipe = client.get_redis_connection(node).pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    try:
        return list(pipe.execute(raise_on_error=False))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        return [exc] * len(commands)


def run_sync(
    client: Any, commands: Sequence[Command], tail: Tail | None = None
) -> tuple[list[Any], list[Any]]:
    """Each command's reply (an exception object for an error reply) and each node's tail
    reply (an exception where the node's pipeline failed), on a ``redis.cluster.RedisCluster``."""
    replies, groups = _plan(client, commands)
    extra = [tail.command] if tail is not None else []
    outs = [_sync_node(client, n, [commands[p][1] for p in ps] + extra) for n, ps in groups]
    tails, again = _merge(replies, groups, outs, tail)
    for pos in again:
        try:
            replies[pos] = client.execute_command(*commands[pos][1])
        except Exception as exc:  # the caller sees it as this reply
            replies[pos] = exc
    return replies, tails


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """The commands in RESP, as redis-py's encoder writes them (str as UTF-8, int in
    decimal, float by repr); a fifth of the cost of its per-argument encoder here."""
    out: list[bytes] = []
    put = out.append
    for command in commands:
        put(b"*%d\r\n" % len(command))
        for a in command:
            if isinstance(a, str):
                b = a.encode()
            elif isinstance(a, bytes):
                b = a
            elif isinstance(a, int) and not isinstance(a, bool):
                b = b"%d" % a
            elif isinstance(a, float):
                b = repr(a).encode()
            else:
                raise TypeError(f"cannot send {type(a).__name__} to Redis")
            put(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


async def _send(conn: Any, commands: list[tuple[Any, ...]], blocks_s: float) -> list[Any]:
    """Each command's reply (error replies as exception objects) on ``conn``: written at
    once, read in order under one timeout (the socket timeout, plus ``blocks_s``). A
    connection that fails or times out is closed; the replies it did not give are the
    error."""
    out: list[Any] = []
    limit = conn.socket_timeout + blocks_s if conn.socket_timeout else None
    try:
        if conn.should_reconnect():  # marked by a failover or maintenance notification
            await conn.disconnect()
        await conn.send_packed_command(pack(commands), check_health=False)
        async with asyncio.timeout(limit):
            for _ in commands:
                try:
                    out.append(await conn.read_response(timeout=math.inf))
                except ResponseError as exc:  # an error reply: the rest still follows
                    out.append(exc)
    except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError, RuntimeError) as exc:
        # RuntimeError: asyncio's "the handler is closed", when the cluster client closed
        # this connection meanwhile (a failover): a connection error like any other
        await conn.disconnect(nowait=True)
        if isinstance(exc, RuntimeError):
            exc = RedisConnectionError(f"connection closed: {exc}")
        failed = exc if isinstance(exc, _REROUTE) else RedisTimeoutError(str(exc) or "timeout")
        out.extend([failed] * (len(commands) - len(out)))
    return out


async def _node_pipeline(node: Any, commands: list[tuple[Any, ...]], blocks_s: float) -> list[Any]:
    """``_send`` on one of a cluster node's pooled connections."""
    conn = node.acquire_connection()
    try:
        return await _send(conn, commands, blocks_s)
    finally:
        node.release(conn)


async def run_single_async(
    client: Any, commands: Sequence[tuple[Any, ...]], tail: Tail | None = None
) -> tuple[list[Any], list[Any]]:
    """The commands' replies and the tail's on a single node (``redis.asyncio.Redis``), on
    one of its pooled connections."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        extra = [tail.command] if tail is not None else []
        out = await _send(conn, [*commands, *extra], tail.blocks_s if tail else 0.0)
    finally:
        await pool.release(conn)
    return (out[:-1], out[-1:]) if tail is not None else (out, [])


async def _via_client(client: Any, args: tuple[Any, ...]) -> Any:
    try:
        return await client.execute_command(*args)
    except Exception as exc:  # the caller sees it as this reply
        return exc


async def run_async(
    client: Any, commands: Sequence[Command], tail: Tail | None = None
) -> tuple[list[Any], list[Any]]:
    """The same on a ``redis.asyncio.cluster.RedisCluster``; the nodes' pipelines run
    concurrently."""
    if getattr(client, "_initialize", False):  # the first command initialises the client
        first = [await _via_client(client, c[1]) for c in commands]
        return first, [RedisClusterException("client was not initialised")] * (tail is not None)
    replies, groups = _plan(client, commands)
    extra = [tail.command] if tail is not None else []
    outs = await asyncio.gather(
        *(
            _node_pipeline(n, [commands[p][1] for p in ps] + extra, tail.blocks_s if tail else 0.0)
            for n, ps in groups
        )
    )
    tails, again = _merge(replies, groups, list(outs), tail)
    for pos in again:  # one by one: redis-py re-sends a command whose connection its own
        # slot-map refresh closed, so concurrent re-routes could apply one twice
        replies[pos] = await _via_client(client, commands[pos][1])
    return replies, tails
