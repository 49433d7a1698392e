from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.models.clustering import cluster_complexity, density_quotas
from curation.stages.redundancy import keep_within_clusters
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import DENSE_TOPIC, SPARSE_TOPICS

pytestmark = pytest.mark.model


def test_density_quotas_prune_low_complexity_clusters_harder() -> None:
    sizes = np.array([100, 100, 100])
    complexity = np.array([0.05, 0.2, 0.4])  # dense, medium, sparse
    quotas = density_quotas(sizes, complexity, keep_fraction=0.5, temperature=0.1)
    assert quotas.sum() == 150
    assert quotas[0] < quotas[1] < quotas[2] <= 100


def test_density_quotas_spread_the_surplus_of_small_clusters() -> None:
    quotas = density_quotas(np.array([2, 1000]), np.array([1.0, 0.1]), keep_fraction=0.5, temperature=0.1)
    assert quotas.tolist() == [2, 499]  # the small cluster is capped at its size, the rest goes on


def test_density_quotas_keep_everything_at_fraction_one() -> None:
    sizes = np.array([3, 0, 7])
    assert density_quotas(sizes, np.array([0.1, 0.5, 0.9]), 1.0, 0.5).tolist() == [3, 0, 7]


def test_density_quotas_never_empty_a_cluster() -> None:
    sizes = np.array([50, 3, 1, 0, 200])
    quotas = density_quotas(
        sizes, np.array([0.001, 0.002, 0.001, 0.5, 0.9]), keep_fraction=0.05, temperature=0.01
    )
    assert (quotas[sizes > 0] >= 1).all() and quotas[3] == 0 and (quotas <= sizes).all()
    assert quotas.sum() == round(0.05 * sizes.sum())
    # a budget below one document per cluster still keeps every cluster's survivor
    assert density_quotas(np.array([10, 10, 10]), np.zeros(3), 0.05, 0.1).tolist() == [1, 1, 1]


def test_cluster_complexity_grows_with_spread_and_isolation() -> None:
    centroids = np.eye(3, dtype=np.float32)
    complexity = cluster_complexity(np.array([0.1, 0.3, 0.3]), centroids, neighbours=2)
    assert complexity[0] < complexity[1] == pytest.approx(complexity[2])


def test_keep_within_clusters_keeps_the_highest_priority_rows() -> None:
    clusters = np.array([0, 0, 0, 1, 1])
    priority = np.array([0.2, 0.9, 0.5, 0.1, 0.3])
    keys = np.arange(5, dtype=np.uint64)
    keep = keep_within_clusters(clusters, priority, keys, quotas=np.array([2, 1]))
    assert keep.tolist() == [False, True, True, False, True]


def test_redundancy_control_prunes_the_dense_cluster_more(tmp_path: Path, models_dir: Path) -> None:
    texts = DENSE_TOPIC + SPARSE_TOPICS
    inp = write_docs(tmp_path / "in", texts, shards=3)
    stage = {
        "type": "redundancy-control",
        "params": {"clusters": 2, "keepFraction": 0.6, "temperature": 0.05},
    }
    summary = run_all(
        make_spec(inp, tmp_path / "out", [stage], models={"path": str(models_dir)}, parallelism=2)
    )

    kept = {r["text"] for r in output_rows(tmp_path / "out")}
    dense_kept = len(kept & set(DENSE_TOPIC)) / len(DENSE_TOPIC)
    sparse_kept = len(kept & set(SPARSE_TOPICS)) / len(SPARSE_TOPICS)
    assert dense_kept < sparse_kept
    assert len(kept) == round(0.6 * len(texts))
    assert summary["conservation"]["holds"]
    stage_stats = summary["stages"][1]
    assert stage_stats["removed"] == {"redundancy-pruned": len(texts) - len(kept)}
    assert sum(stage_stats["extra"]["kmeans_cluster_sizes"].values()) == 2
    rejected = output_rows(tmp_path / "out", "rejected")
    kept_rows = output_rows(tmp_path / "out")
    assert {r["reason"] for r in rejected} == {"redundancy-pruned"}
    # the evidence: each pruned document's cluster, and its rank in that cluster's keep order,
    # past the documents its cluster kept; every cluster keeps its survivors
    kept_per_cluster: dict[int, int] = {}
    for r in kept_rows:
        kept_per_cluster[r["redundancy_cluster"]] = kept_per_cluster.get(r["redundancy_cluster"], 0) + 1
    for r in rejected:
        assert r["redundancy_rank"] >= kept_per_cluster[r["redundancy_cluster"]] >= 1
    by_cluster: dict[int, list[int]] = {}
    for r in rejected:
        by_cluster.setdefault(r["redundancy_cluster"], []).append(r["redundancy_rank"])
    for cluster, ranks in by_cluster.items():
        assert sorted(ranks) == list(range(kept_per_cluster[cluster], kept_per_cluster[cluster] + len(ranks)))
