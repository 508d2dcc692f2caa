"""The served models and their atomic replacement (hot reload).

``ModelHolder.current`` is an immutable ``Models`` value; a request reads it once and keeps
using that object, so a reload (which builds the new models off the event loop, then
assigns the reference) never changes a model under a running request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from patron.bundle import BundleError, read_manifest
from serving.admin_state import ModelPin
from serving.errors import NotFound, NotReady, ReloadRefused
from serving.model import LoadedModel, load_model
from serving.recommend import warm_model
from serving.registry_client import RegistryClient, ResolvedBundle
from serving.settings import ServingSettings

log = logging.getLogger("patron.serving")


@dataclass(frozen=True)
class Models:
    champion: LoadedModel
    challenger: LoadedModel | None = None
    notes: tuple[str, ...] = ()  # e.g. "registry unreachable; serving cached bundle ..."

    def versions(self) -> tuple[str, str | None]:
        """(champion, challenger) versions: the A/B experiment these models run."""
        return self.champion.version, self.challenger.version if self.challenger else None

    def pin(self) -> ModelPin:
        """What these models are, as the shared admin state pins them."""
        c = self.challenger
        return ModelPin(
            self.champion.version,
            self.champion.fingerprint,
            c.version if c else None,
            c.fingerprint if c else None,
        )


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    previous: str | None
    champion: str
    challenger: str | None
    notes: tuple[str, ...]


class ModelHolder:
    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.current: Models | None = None
        self.registry: RegistryClient | None = None
        if settings.bundle is None:
            self.registry = RegistryClient(
                settings.tracking_uri(), settings.model_name, settings.cache_dir()
            )
        self._lock = asyncio.Lock()
        # checks a model's tiers against the active rules (set by the app): a bundle whose
        # tiers the rules do not name is refused like a corrupt one
        self.tier_check: Callable[[tuple[str, ...]], None] | None = None

    def models(self) -> Models:
        if self.current is None:
            raise NotReady("no model loaded yet")
        return self.current

    def _resolve(self, pin: ModelPin | None = None) -> tuple[ResolvedBundle, ResolvedBundle | None]:
        """The bundles to serve: the aliases' versions now, or the pinned versions (a local
        bundle directory is read again either way)."""
        s = self.settings
        if self.registry is None:
            assert s.bundle is not None
            champ = ResolvedBundle(Path(s.bundle), "", None, str(s.bundle))
            chall = None
            if s.challenger_bundle is not None:
                chall = ResolvedBundle(
                    Path(s.challenger_bundle), "", None, str(s.challenger_bundle)
                )
            return champ, chall
        champ = self.registry.fetch(s.model_alias, pin.champion_version if pin else None)
        chall = None
        if pin is not None:
            if pin.challenger_version is not None:
                chall = self.registry.fetch(s.challenger_alias, pin.challenger_version)
        elif s.challenger_traffic > 0:
            try:
                chall = self.registry.fetch(s.challenger_alias)
            except NotFound:
                log.warning("no %s alias: all traffic goes to the champion", s.challenger_alias)
        return champ, chall

    def _load_one(self, r: ResolvedBundle, previous: LoadedModel | None) -> LoadedModel:
        if previous is not None and previous.source == r.source:
            same_version = not r.version or previous.version == r.version
            if same_version and read_manifest(r.path).fingerprint() == previous.fingerprint:
                return previous
        model = load_model(
            r.path,
            version=r.version or None,
            alias=r.alias,
            source=r.source,
            hnsw_min_items=self.settings.hnsw_min_items,
            ef_search=self.settings.hnsw_ef_search,
        )
        warm_model(model)  # its kernels ready before it serves (here, in the loading thread)
        return model

    def load(self, pin: ModelPin | None = None) -> Models:
        """Resolve and load (blocking); reuses unchanged models of the current value."""
        prev = self.current
        champ_r, chall_r = self._resolve(pin)
        champion = self._load_one(champ_r, prev.champion if prev else None)
        challenger = None
        if chall_r is not None:
            challenger = self._load_one(chall_r, prev.challenger if prev else None)
        notes = tuple(n for n in (champ_r.note, chall_r.note if chall_r else None) if n)
        if self.tier_check is not None:
            for m in (champion, challenger):
                if m is not None:
                    self.tier_check(m.tiers)
        return Models(champion, challenger, notes)

    async def reload(
        self,
        pin: ModelPin | None = None,
        commit: Callable[[Models], Awaitable[None]] | None = None,
    ) -> ReloadResult:
        """Build the new models in a worker thread (the aliases' versions, or the pinned
        ones), await ``commit(new)`` (e.g. publish them; raising keeps the current models),
        then swap the reference atomically."""
        async with self._lock:
            prev = self.current
            try:
                new = await asyncio.to_thread(self.load, pin)
            except (BundleError, ValueError) as exc:
                if prev is None:
                    raise
                log.error(
                    "reload refused: %s; still serving version %s", exc, prev.champion.version
                )
                raise ReloadRefused(
                    f"new bundle refused ({exc}); still serving version {prev.champion.version}"
                ) from None
            if commit is not None:
                await commit(new)
            self.current = new
        changed = prev is None or (
            new.champion is not prev.champion or new.challenger is not prev.challenger
        )
        if changed:
            # a loaded model is ~10^5 long-lived objects (id maps of a million customers): a
            # full collection walking them took 120-200 ms, a pause every request in flight
            # would wait out. Frozen, the collector skips them (refcounting still frees them).
            gc.freeze()
        return ReloadResult(
            changed=changed,
            previous=prev.champion.version if prev else None,
            champion=new.champion.version,
            challenger=new.challenger.version if new.challenger else None,
            notes=new.notes,
        )
