"""redundancy-control (D4 / density-based pruning): dense, redundant clusters keep fewer documents.

Shares embed, k-means and filter with semantic-dedup (see semantic.py). After assignment the
k-means step knows every cluster's size and mean distance to its centroid; it turns these into
per-cluster keep quotas (`kmeans/quotas.npy`, see `density_quotas`) whose sum is `keepFraction`
of the documents. The prune step (reduce, one rank per cluster partition) keeps each cluster's
quota, least prototypical documents first (or a seeded random choice), and the filter step drops
the rest with reason `redundancy-pruned`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curation.models.clustering import cluster_complexity, density_quotas
from curation.stages.base import StepContext
from curation.stages.semantic import CLUSTER, KEY, PRIORITY, ClusteredStage, read_npy, splitmix64, write_npy


def keep_within_clusters(
    clusters: np.ndarray, priority: np.ndarray, keys: np.ndarray, quotas: np.ndarray
) -> np.ndarray:
    """Boolean mask: in each cluster, the `quotas[cluster]` rows of highest priority (ties by key)."""
    keep = np.zeros(len(clusters), dtype=bool)
    order = np.lexsort((keys, -priority, clusters))
    sorted_clusters = clusters[order]
    starts = np.searchsorted(sorted_clusters, sorted_clusters, side="left")
    rank_in_cluster = np.arange(len(order)) - starts
    keep[order] = rank_in_cluster < quotas[sorted_clusters]
    return keep


class RedundancyControlStage(ClusteredStage):
    type_name = "redundancy-control"
    steps = ("embed", "kmeans", "prune", "filter")
    reduce_step = "prune"
    reason = "redundancy-pruned"
    cluster_column = "redundancy_cluster"

    def priorities(self, ctx: StepContext, shard: int, keys: np.ndarray, distance: np.ndarray) -> np.ndarray:
        if self.params.drop_prototypical:
            return distance.astype(np.float64)
        return (splitmix64(keys, self.params.seed) >> np.uint64(11)).astype(np.float64)

    def after_assignment(
        self, ctx: StepContext, sizes: np.ndarray, distance_sums: np.ndarray, centroids: np.ndarray
    ) -> dict[str, Any]:
        p = self.params
        intra = np.divide(distance_sums, sizes, out=np.zeros(len(sizes)), where=sizes > 0)
        complexity = cluster_complexity(intra, centroids, p.neighbours)
        quotas = density_quotas(sizes, complexity, p.keep_fraction, p.temperature)
        write_npy(ctx.scratch.join("kmeans", "quotas.npy"), quotas)
        kept = np.divide(quotas, sizes, out=np.ones(len(sizes)), where=sizes > 0)
        # The report shows how hard clusters of each density were pruned: deciles of complexity.
        order = np.argsort(complexity)
        deciles = np.array_split(order, min(10, len(order)))
        return {
            "keep_fraction_by_complexity_decile": [
                round(float(quotas[d].sum() / max(1, sizes[d].sum())), 3) for d in deciles if len(d)
            ],
            "min_cluster_keep_fraction": round(float(kept[sizes > 0].min()), 3) if (sizes > 0).any() else 1.0,
        }

    def step_prune(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        table = self.read_partition(ctx, rank)
        keys = table.column(KEY).to_numpy().astype(np.uint64)
        quotas = read_npy(ctx.scratch.join("kmeans", "quotas.npy"))
        keep = keep_within_clusters(
            table.column(CLUSTER).to_numpy(), table.column(PRIORITY).to_numpy(), keys, quotas
        )
        self.write_removed(ctx, rank, keys[~keep])
        return {"docs_in": len(keys), "docs_out": int(keep.sum())}
