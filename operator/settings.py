"""Operator settings, from environment variables with the ``THRESHER_`` prefix.

Examples: ``THRESHER_WORKER_IMAGE=ghcr.io/acme/thresher:0.1.0``, ``THRESHER_NAMESPACES=a,b`` (empty:
watch every namespace), ``THRESHER_METRICS_PORT=8000``. Secrets (none today) would be read from
files in ``THRESHER_SECRETS_DIR``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THRESHER_", extra="ignore", frozen=True)

    worker_image: str = "ghcr.io/thresher-dev/thresher:latest"
    """Image of the step pods when a CurationJob names none."""

    worker_image_pull_policy: str = "IfNotPresent"
    worker_command: Annotated[list[str], NoDecode] = ["thresher"]
    """Program the step pods run (`<command> worker --spec ... --step ...`); comma-separated in env."""

    worker_service_account: str = "thresher-worker"
    """ServiceAccount of step pods when the spec names none (it needs no API rights)."""

    worker_metrics_port: int = Field(default=9400, ge=0, le=65535)
    worker_run_as_user: int | None = 1000
    """UID of the worker containers (the image's non-root user); None leaves it to the image."""

    worker_fs_group: int | None = 1000
    """fsGroup of step pods, so the output PVC is writable by the worker's user."""

    namespaces: Annotated[list[str], NoDecode] = []
    """Namespaces to watch (comma-separated); empty = every namespace."""

    metrics_port: int = Field(default=8000, ge=0, le=65535)
    """Port of the operator's Prometheus `/metrics` (0 = off)."""

    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    """kopf liveness endpoint (empty = off)."""

    reconcile_interval: float = Field(default=10.0, gt=0)
    """Seconds between periodic reconciles of every CurationJob (Job events also trigger one)."""

    finished_job_ttl_seconds: int = Field(default=3600, ge=0)
    """A failed step's Job (and its pods, whose logs explain the failure) is deleted this long after
    its CurationJob failed. A succeeded step's Job goes as soon as its counts are in the
    CurationJob's status."""

    @field_validator("worker_command", "namespaces", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
