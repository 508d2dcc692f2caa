"""How the online store's script calls reach Redis: one EVALSHA, one pipeline on a single
node, or per-node pipelines on a cluster (features/online_pipeline.py); a node that lost its
scripts (a restart, a promoted replica) gets them again, and a durability tail (``WAIT``)
rides on the connection that wrote."""

from __future__ import annotations

from typing import Any

from redis.exceptions import NoScriptError

from features.online_layout import Layout, is_cluster
from features.online_pipeline import Tail, run_async, run_single_async, run_sync
from features.online_scripts import (
    READ_LUA,
    RECORD_LUA,
    Call,
    Durability,
    NotReplicated,
    ReadPlanner,
)


def _raise_first(replies: list[Any]) -> list[Any]:
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies


class ScriptCalls:
    """The client, its scripts (flagged for a cluster) and how calls are routed."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.r = client
        self.ns = namespace
        self.keys = Layout(namespace)
        self.cluster = is_cluster(client)
        self._read = client.register_script(READ_LUA)
        self._record = client.register_script(RECORD_LUA)
        self._planner = ReadPlanner(self.keys, self.cluster)

    def _pipeline(self) -> Any:
        """A plain pipeline for bulk writes (a cluster pipeline splits itself per node)."""
        return self.r.pipeline() if self.cluster else self.r.pipeline(transaction=False)

    @staticmethod
    def _commands(script: Any, calls: list[Call]) -> list[tuple[int, tuple[Any, ...]]]:
        return [(c.slot, ("EVALSHA", script.sha, len(c.keys), *c.keys, *c.args)) for c in calls]

    @staticmethod
    def _tail(durable: Durability | None) -> Tail | None:
        """What ends each node's pipeline for ``durable`` events (``WAIT``)."""
        return Tail(durable.command(), durable.timeout_ms / 1000) if durable else None

    @staticmethod
    def _recorded(replies: list[Any], tails: list[Any], durable: Durability | None) -> int:
        """How many events were applied; raises NotReplicated when too few replicas
        confirmed them."""
        applied = sum(int(n) for n in replies)
        if durable is not None:
            acked = durable.acknowledged(tails)
            if acked < durable.replicas:
                raise NotReplicated(applied, acked, durable)
        return applied


class SyncCalls(ScriptCalls):
    """Calls over a sync client (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""

    def _run(
        self, script: Any, calls: list[Call], tail: Tail | None = None
    ) -> tuple[list[Any], list[Any]]:
        """Every call's reply and the tail's reply per node: one EVALSHA, or a pipeline (per
        node on a cluster); a node that lost its scripts (a restart, a promoted replica) gets
        them again."""
        if len(calls) == 1 and tail is None:
            return [script(keys=calls[0].keys, args=calls[0].args)], []
        for _ in range(2):
            if self.cluster:
                replies, tails = run_sync(self.r, self._commands(script, calls), tail)
            else:
                pipe = self.r.pipeline(transaction=False)
                for _slot, command in self._commands(script, calls):
                    pipe.execute_command(*command)
                if tail is not None:
                    pipe.execute_command(*tail.command)
                out = pipe.execute(raise_on_error=False)
                replies, tails = (out[:-1], out[-1:]) if tail is not None else (out, [])
            if not any(isinstance(r, NoScriptError) for r in replies):
                break
            self.r.script_load(script.script)  # every primary on a cluster
        return _raise_first(replies), tails


class AsyncCalls(ScriptCalls):
    """Calls over redis.asyncio (``Redis`` or ``RedisCluster``)."""

    async def _run(
        self, script: Any, calls: list[Call], tail: Tail | None = None
    ) -> tuple[list[Any], list[Any]]:
        """As SyncCalls._run."""
        if len(calls) == 1 and tail is None:
            return [await script(keys=calls[0].keys, args=calls[0].args)], []
        commands = self._commands(script, calls)
        for _ in range(2):
            if self.cluster:
                replies, tails = await run_async(self.r, commands, tail)
            else:
                replies, tails = await run_single_async(self.r, [c for _, c in commands], tail)
            if not any(isinstance(r, NoScriptError) for r in replies):
                break
            await self.r.script_load(script.script)
        return _raise_first(replies), tails
