"""Resolve ``models:/<name>@<alias>`` to a verified local bundle, with a local cache.

Bundles are downloaded once per registered version into ``<cache>/<name>/v<version>``
(download into a temp dir, verify every checksum, then rename), and the last version each
alias resolved to is remembered in ``<cache>/<name>/aliases.json``. When the registry is
unreachable the cached bundle of that alias is served and the ``note`` says so (readiness
reports it). MLflow's own HTTP retries apply first (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from patron.bundle import MANIFEST, BundleError, verify_bundle
from serving.errors import NotFound, Unavailable

log = logging.getLogger("patron.serving")


@dataclass(frozen=True)
class ResolvedBundle:
    path: Path
    version: str
    alias: str | None
    source: str  # models:/name@alias, or the local directory
    note: str | None = None  # set when serving from cache because the registry failed


class RegistryUnreachable(Exception):
    """The tracking server / store could not be asked."""


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _find_bundle_root(path: Path) -> Path:
    """The shallowest folder holding a manifest (pyfunc models nest it under artifacts/)."""
    found = sorted(path.rglob(MANIFEST), key=lambda p: (len(p.parts), str(p)))
    if found:
        return found[0].parent
    raise BundleError(f"{path}: downloaded artifacts hold no {MANIFEST}")


class RegistryClient:
    """Thin wrapper over ``MlflowClient`` for one registered model."""

    def __init__(self, tracking_uri: str, model_name: str, cache_dir: Path) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.cache = Path(cache_dir) / model_name

    def _client(self):  # type: ignore[no-untyped-def]
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def uri(self, alias: str) -> str:
        return f"models:/{self.model_name}@{alias}"

    def version_of(self, alias: str) -> str:
        """The version the alias points to now. NotFound / RegistryUnreachable otherwise."""
        try:
            mv = self._client().get_model_version_by_alias(self.model_name, alias)
        except Exception as exc:
            if _is_missing(exc):
                raise NotFound(f"{self.uri(alias)} does not exist: {exc}") from None
            raise RegistryUnreachable(f"{type(exc).__name__}: {exc}") from None
        return str(mv.version)

    def _aliases(self) -> dict[str, str]:
        f = self.cache / "aliases.json"
        try:
            return dict(json.loads(f.read_text()))
        except (OSError, ValueError):
            return {}

    def _remember(self, alias: str, version: str) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        aliases = {**self._aliases(), alias: version}
        tmp = self.cache / f".aliases.{os.getpid()}.json"
        tmp.write_text(json.dumps(aliases, indent=2))
        os.replace(tmp, self.cache / "aliases.json")

    def _download(self, version: str) -> Path:
        target = self.cache / f"v{version}"
        if (target / MANIFEST).is_file():
            try:
                verify_bundle(target)
                return target
            except BundleError as exc:
                log.warning("cached bundle v%s is damaged (%s); downloading again", version, exc)
                shutil.rmtree(target, ignore_errors=True)
        import mlflow.artifacts

        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".v{version}.", dir=self.cache))
        try:
            try:
                uri = self._client().get_model_version_download_uri(self.model_name, version)
                got = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(tmp), tracking_uri=self.tracking_uri
                )
            except Exception as exc:
                if _is_missing(exc):
                    raise NotFound(f"version {version} of {self.model_name}: {exc}") from None
                raise RegistryUnreachable(f"{type(exc).__name__}: {exc}") from None
            root = _find_bundle_root(Path(got))
            verify_bundle(root)
            try:
                os.replace(root, target)
            except OSError:  # another worker won the race: use theirs
                if not (target / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def fetch(self, alias: str, version: str | None = None) -> ResolvedBundle:
        """Resolve the alias (or take the pinned ``version``: the one every worker serves,
        see serving/admin_state.py) and make sure its bundle is in the cache, verified."""
        pinned = version is not None
        try:
            if version is None:
                version = self.version_of(alias)
            path = self._download(version)
        except RegistryUnreachable as exc:
            cached = version if pinned else self._aliases().get(alias)
            path = self.cache / f"v{cached}"
            if cached is None or not (path / MANIFEST).is_file():
                what = f"version {version} of {self.model_name}" if pinned else self.uri(alias)
                raise Unavailable(
                    f"model registry unreachable ({exc}) and no cached bundle for {what} in "
                    f"{self.cache}"
                ) from None
            note = f"registry unreachable; serving cached bundle version {cached}"
            log.warning("%s (%s)", note, exc)
            return ResolvedBundle(path, cached, alias, self.uri(alias), note)
        if not pinned:
            self._remember(alias, version)
        return ResolvedBundle(path, version, alias, self.uri(alias))
