"""All four model stages end to end, with every network connection refused: the run is air-gapped."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from curation.models.generation import clear_backends
from curation.models.loading import clear_model_cache
from curation.models.sample_models import ENCODER, GENERATOR, populate
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import PARAPHRASE_PAIRS, UNRELATED, keyboard_mash

pytestmark = pytest.mark.model


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX path
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every connection or name lookup that leaves the machine."""
    attempts: list[Any] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(address: Any) -> None:
        attempts.append(address)
        raise OSError(f"network access attempted during an offline run: {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_local(address):
            refuse(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_local(address):
            refuse(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local((host, 0)):
            refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_the_guard_refuses_outside_connections(network_attempts: list[Any]) -> None:
    with pytest.raises(OSError, match="network access"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    assert network_attempts == ["huggingface.co"]


def test_all_model_stages_run_offline_with_conservation(tmp_path: Path, network_attempts: list[Any]) -> None:
    # A fresh models folder and no model in memory: loading, GGUF dequantisation and caching all
    # happen under the guard.
    clear_model_cache()
    clear_backends()
    before = worker_metrics()
    models = tmp_path / "models"
    populate(models)
    texts = [t for pair in PARAPHRASE_PAIRS for t in pair] + UNRELATED + keyboard_mash(3, seed=9)
    inp = write_docs(tmp_path / "in", texts, shards=2)
    stages = [
        {
            "type": "quality-score",
            "params": {"perplexityModel": GENERATOR, "keepFraction": 0.85, "maxTokens": 32},
        },
        {
            "type": "semantic-dedup",
            "params": {"clusters": 3, "epsilon": 0.1, "embedding": {"model": ENCODER}},
        },
        {"type": "redundancy-control", "params": {"clusters": 2, "keepFraction": 0.9}},
        {
            "type": "rephrase",
            "params": {"model": GENERATOR, "ratio": 0.5, "maxNewTokens": 24, "batchSize": 8},
        },
    ]
    summary = run_all(make_spec(inp, tmp_path / "out", stages, models={"path": str(models)}, parallelism=2))

    assert network_attempts == []
    assert summary["conservation"]["holds"]
    by_type = {s["type"]: s for s in summary["stages"]}
    assert set(by_type["quality-score"]["removed"]) == {"high-perplexity"}
    assert by_type["quality-score"]["extra"]["histograms"]["perplexity_log10"]["counts"]
    assert by_type["semantic-dedup"]["removed"].get("semantic-duplicate", 0) >= 4
    assert by_type["semantic-dedup"]["extra"]["kmeans_cluster_sizes"]
    assert by_type["redundancy-control"]["removed"]["redundancy-pruned"] >= 1
    assert by_type["rephrase"]["docs_out"] == by_type["redundancy-control"]["docs_out"]
    rows = output_rows(tmp_path / "out")
    assert {r["doc_id"] for r in rows if not r["synthetic"]}.isdisjoint(
        r["doc_id"] for r in output_rows(tmp_path / "out", "rejected")
    )
    assert all(
        r["perplexity"] is not None and r["semantic_cluster"] is not None for r in rows if not r["synthetic"]
    )
    assert (tmp_path / "out" / "report.html").exists()
    after = worker_metrics()
    assert all(after[name] > before[name] for name in after), "model work is exported as worker metrics"


def worker_metrics() -> dict[str, float]:
    from prometheus_client import REGISTRY

    samples = {
        "embedded docs": ("thresher_worker_docs_total", {"stage_type": "semantic-dedup", "step": "embed"}),
        "scored tokens": ("thresher_worker_tokens_total", {"stage_type": "quality-score", "step": "score"}),
        "generated tokens": ("thresher_worker_generated_tokens_total", {"stage_type": "rephrase"}),
    }
    return {name: REGISTRY.get_sample_value(*sample) or 0.0 for name, sample in samples.items()}
