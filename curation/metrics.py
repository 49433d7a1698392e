"""Worker metrics: live counters while a rank runs, served on /metrics (no Pushgateway).

Label sets are bounded: stage type and step name, never document or shard ids.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server

DOCS_PROCESSED = Counter(
    "thresher_worker_documents_total",
    "Documents a worker rank has finished, by outcome (kept, removed, generated).",
    ["stage_type", "step", "outcome"],
)
STEP_SECONDS = Gauge(
    "thresher_worker_step_seconds",
    "Seconds the current rank has been running.",
    ["stage_type", "step"],
)
RANK_INFO = Gauge(
    "thresher_worker_rank_info",
    "The step and rank this worker runs (value 1).",
    ["step", "rank", "world_size"],
)


def serve(port: int) -> None:
    """Expose the default registry on `port` (0 = off)."""
    if port > 0:
        start_http_server(port, registry=REGISTRY)


def record_rank(stage_type: str, step: str, stats: dict[str, object]) -> None:
    removed = stats.get("removed") or {}
    assert isinstance(removed, dict)
    DOCS_PROCESSED.labels(stage_type, step, "kept").inc(float(str(stats.get("docs_out", 0))))
    DOCS_PROCESSED.labels(stage_type, step, "removed").inc(float(sum(int(v) for v in removed.values())))
    DOCS_PROCESSED.labels(stage_type, step, "generated").inc(float(str(stats.get("generated", 0))))
    STEP_SECONDS.labels(stage_type, step).set(float(str(stats.get("seconds", 0))))
