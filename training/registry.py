"""MLflow logging, model registration and the champion/challenger promotion gate.

A training run logs params, validation metrics, the data fingerprint and the bundle directory
(artifact ``bundle/``). With ``register`` the bundle is also logged as a pyfunc model
(training/pyfunc_model.py, models-from-code, bundle as its ``bundle`` artifact), registered
under ``model_name``, and the new version gets the alias ``challenger``.

Promotion moves ``champion`` to a version when sanity checks pass (bundle verifies, no NaN
factors, coverage >= floor, every catalog item mapped) and its validation nDCG@10 beats the
champion's by more than ``min_gain`` (relative; 0: strictly better) on the same evaluation data
(equal ``eval_fingerprint``): a model no better than the champion (e.g. the same one retrained)
is refused. ``force`` skips the comparison but needs a reason, stored as a tag. The promoted
version leaves ``challenger`` (one version never holds both aliases). The registered model
keeps ``champion_history`` (JSON list of versions) for rollback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from patron.bundle import BundleError, load_bundle

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
GATE_METRIC = "val_ndcg_at_10"
HISTORY_TAG = "champion_history"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


PIP_REQUIREMENTS = ["mlflow", "numpy", "scipy", "pandas", "polars", "pyarrow", "pydantic"]


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "customer_id")]),
        outputs=Schema(
            [
                ColSpec("string", "customer_id"),
                ColSpec("long", "rank"),
                ColSpec("string", "item_id"),
                ColSpec("double", "score"),
            ]
        ),
    )


class GateError(Exception):
    """Promotion refused; the message says why and what to do."""


def _client(tracking_uri: str) -> Any:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def metric_key(name: str) -> str:
    """MLflow metric names cannot contain '@'."""
    return name.replace("@", "_at_")


def log_training_run(
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    bundle_dir: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    register: bool,
    artifact_location: str | None = None,
) -> dict[str, Any]:
    """Log one training run (and register it); returns run_id, model_name, model_version."""
    import mlflow

    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
    else:
        exp_id = exp.experiment_id
    version: str | None = None
    with mlflow.start_run(experiment_id=exp_id, run_name="patron-train") as run:
        mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
        finite = {metric_key(k): float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        mlflow.log_metrics(finite)
        mlflow.set_tags(tags)
        mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
        if register:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"bundle": str(bundle_dir)},
                registered_model_name=model_name,
                pip_requirements=PIP_REQUIREMENTS,  # explicit: skips slow inference
                signature=_signature(),
            )
            version = str(info.registered_model_version)
    if version is not None:
        for key, value in {**tags, GATE_METRIC: str(finite.get(GATE_METRIC, ""))}.items():
            client.set_model_version_tag(model_name, version, key, value)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    return {"run_id": run.info.run_id, "model_name": model_name, "model_version": version}


@dataclass
class VersionInfo:
    version: str
    run_id: str
    aliases: list[str]
    ndcg: float | None
    eval_fingerprint: str
    created: str


def _version_info(client: Any, name: str, mv: Any) -> VersionInfo:
    run = client.get_run(mv.run_id)
    ndcg = run.data.metrics.get(GATE_METRIC)
    return VersionInfo(
        version=str(mv.version),
        run_id=mv.run_id,
        aliases=list(getattr(mv, "aliases", []) or []),
        ndcg=None if ndcg is None else float(ndcg),
        eval_fingerprint=run.data.tags.get("eval_fingerprint", ""),
        created=datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
    )


def list_versions(tracking_uri: str, name: str) -> list[dict[str, Any]]:
    """Every registered version, newest first, with aliases and the gate metric."""
    client = _client(tracking_uri)
    versions = client.search_model_versions(f"name='{name}'")
    # search results carry no aliases; fetch each version for them
    infos = [
        _version_info(client, name, client.get_model_version(name, mv.version)) for mv in versions
    ]
    infos.sort(key=lambda v: int(v.version), reverse=True)
    return [vars(v) for v in infos]


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _history(client: Any, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags or {}
    try:
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except json.JSONDecodeError:
        return []


def sanity_check(bundle_dir: Path, min_coverage: float, coverage: float | None) -> list[str]:
    """Problems that block promotion (empty list = fine)."""
    problems: list[str] = []
    try:
        b = load_bundle(bundle_dir)
    except BundleError as exc:
        return [f"bundle does not verify: {exc}"]
    if not (np.isfinite(b.user_factors).all() and np.isfinite(b.item_factors).all()):
        problems.append("factors contain NaN or inf")
    if not np.isfinite(b.copurchase.data).all():
        problems.append("co-purchase scores contain NaN or inf")
    cat_ids = b.catalog["item_id"].cast(str).to_numpy()
    if len(cat_ids) != len(b.item_ids) or not (cat_ids == b.item_ids.astype(str)).all():
        problems.append("catalog snapshot does not map every item index")
    if coverage is None or not math.isfinite(coverage) or coverage < min_coverage:
        problems.append(f"validation catalog coverage {coverage} below floor {min_coverage}")
    return problems


def _download_bundle(client: Any, run_id: str, dst: Path) -> Path:
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="bundle", dst_path=str(dst), tracking_uri=client.tracking_uri
    )
    return Path(path)


def promote(
    tracking_uri: str,
    name: str,
    *,
    version: str | None = None,
    min_gain: float = 0.0,
    min_coverage: float = 0.01,
    force: bool = False,
    reason: str | None = None,
    workdir: Path,
    online_check: Callable[[str, str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Move ``champion`` to ``version`` (default: the ``challenger``) if the gate passes.

    ``online_check(champion_version, version)`` is the A/B report of the two
    (serving/cli_ab.py): with it the gate also needs its verdict "challenger better"; --force
    does not skip it."""
    if force and not (reason and reason.strip()):
        raise GateError("--force needs --reason TEXT (it is recorded on the model version)")
    if not 0 <= min_gain < 1:
        raise GateError(f"min_gain must be in [0, 1), got {min_gain}")
    client = _client(tracking_uri)
    if version is None:
        mv = _alias_version(client, name, CHALLENGER)
        if mv is None:
            raise GateError(f"model {name!r} has no '{CHALLENGER}'; train with --register first")
    else:
        mv = client.get_model_version(name, str(version))
    cand = _version_info(client, name, mv)
    champ_mv = _alias_version(client, name, CHAMPION)
    champ = _version_info(client, name, champ_mv) if champ_mv is not None else None
    run = client.get_run(cand.run_id)
    coverage = run.data.metrics.get("val_coverage")
    bundle = _download_bundle(client, cand.run_id, workdir / f"promote-v{cand.version}")
    problems = sanity_check(bundle, min_coverage, coverage)
    decision: dict[str, Any] = {
        "model_name": name,
        "version": cand.version,
        "challenger_ndcg": cand.ndcg,
        "champion_version": champ.version if champ else None,
        "champion_ndcg": champ.ndcg if champ else None,
        "min_gain": min_gain,
        "sanity_problems": problems,
        "forced": force,
    }
    if problems:
        raise GateError(f"version {cand.version} fails sanity checks: {'; '.join(problems)}")
    if champ is not None and champ.version == cand.version:
        return {**decision, "promoted": False, "reason": "already champion"}
    if champ is not None and not force:
        if cand.eval_fingerprint != champ.eval_fingerprint:
            raise GateError(
                f"version {cand.version} was evaluated on other data than champion "
                f"{champ.version}; retrain both on the same data or use --force --reason"
            )
        if cand.ndcg is None or champ.ndcg is None:
            raise GateError("a version has no validation nDCG@10; use --force --reason")
        bar = champ.ndcg * (1.0 + min_gain)
        if not cand.ndcg > bar:
            raise GateError(
                f"version {cand.version} nDCG@10 {cand.ndcg:.4f} is not better than champion "
                f"{champ.version}'s {champ.ndcg:.4f} by more than {min_gain:.1%} (needs > "
                f"{bar:.4f}); use --force --reason to promote it anyway"
            )
    if online_check is not None:
        if champ is None:
            raise GateError("--require-online: there is no champion to compare with online")
        online = online_check(champ.version, cand.version)
        decision["online"] = {
            k: online.get(k) for k in ("experiment", "verdict", "why", "since", "until")
        }
        if online.get("verdict") != "challenger better":
            raise GateError(
                f"online A/B {online.get('experiment')}: {online.get('verdict')} "
                f"({online.get('why')}); --require-online needs 'challenger better'"
            )
    client.set_registered_model_alias(name, CHAMPION, cand.version)
    if CHALLENGER in cand.aliases:  # promoted: it is no longer the one being challenged with
        client.delete_registered_model_alias(name, CHALLENGER)
    history = [*_history(client, name), cand.version]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    now = datetime.now(UTC).isoformat()
    client.set_model_version_tag(name, cand.version, "promoted_at", now)
    if force:
        client.set_model_version_tag(name, cand.version, "forced_reason", str(reason))
        client.set_tag(cand.run_id, "forced_reason", str(reason))
    return {**decision, "promoted": True, "champion": cand.version, "history": history}


def rollback(tracking_uri: str, name: str) -> dict[str, Any]:
    """Point ``champion`` back at the previous champion from the history tag."""
    client = _client(tracking_uri)
    history = _history(client, name)
    if len(history) < 2:
        raise GateError(f"model {name!r} has no previous champion to roll back to")
    current, previous = history[-1], history[-2]
    client.set_registered_model_alias(name, CHAMPION, previous)
    new_history = history[:-1]
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(new_history))
    client.set_model_version_tag(name, current, "rolled_back_at", datetime.now(UTC).isoformat())
    return {
        "model_name": name,
        "champion": previous,
        "rolled_back": current,
        "history": new_history,
    }
