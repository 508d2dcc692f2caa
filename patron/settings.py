"""Process-wide settings read from options or ``PATRON_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Settings shared by every job. Serving adds its own on top (serving/settings.py)."""

    model_config = SettingsConfigDict(env_prefix="PATRON_", extra="ignore")

    data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data",
        description="Folder holding the shipped data sets (ml-100k/, cdnow/).",
    )
    work_dir: Path = Field(
        default=PROJECT_ROOT / "var",
        description="Where jobs write their outputs by default (imports, features, bundles).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="One Redis node; with redis_cluster, any node of the cluster.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="PATRON_REDIS_CLUSTER=1: the URL names a node of a Redis Cluster.",
    )
    redis_namespace: str = Field(
        default="patron",
        pattern=r"^[^{}]+$",
        description="Key prefix; no braces (the store adds its own hash tags).",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="Any MLflow URI; default is a local SQLite store under work_dir/mlflow.",
    )
    spark_master: str = Field(
        default="local[*]",
        description="Spark master for --engine spark (local[N], spark://, yarn, k8s://).",
    )
    ab_window_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="A purchase of a recommended item counts for the answer's A/B variant "
        "this many days after the answer (serving/attribution/).",
    )
    ab_retention_days: int = Field(
        default=90, ge=1, le=3_650, description="How long the A/B counters per day are kept."
    )
    ab_confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="Confidence of the A/B report's intervals and tests (patron ab report, "
        "patron models promote --require-online).",
    )
    model_name: str = Field(default="patron-recommender")
    experiment: str = Field(default="patron")
    log_level: str = Field(default="INFO")

    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        db = (self.work_dir / "mlflow" / "mlflow.db").resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{db}"

    def artifact_root(self) -> str:
        return (self.work_dir / "mlflow" / "artifacts").resolve().as_uri()


@lru_cache
def get_settings() -> Settings:
    return Settings()
