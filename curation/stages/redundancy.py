"""redundancy-control (D4 / density-based pruning): dense, redundant clusters keep fewer documents.

Shares embed, k-means, assign and filter with semantic-dedup (see semantic.py):

- prune (reduce): every rank adds up the assign ranks' small per-cluster aggregates (document
  counts and distance sums: k numbers each) into every cluster's size and mean distance to its
  centroid, turns them with the centroids into per-cluster keep quotas (`density_quotas`: their
  sum is `keepFraction` of the documents, and every non-empty cluster keeps at least one), then,
  for each of its partitions, keeps each cluster's quota, least prototypical documents first (or
  a seeded random choice), and writes the pruned keys with their cluster, rank in the cluster's
  keep order and the kept document of their cluster nearest its centroid to one removal file
  per rank;
- filter (map): rejects the pruned documents (`redundancy-pruned`, with `redundancy_rank`,
  `dup_of` = `dup_group` = that kept document and `similarity` = the cosine of the two
  embeddings, read by row from the embed side files) and annotates every document with
  `redundancy_cluster`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import DUP_GROUP, DUP_OF, REDUNDANCY_RANK, SIMILARITY
from curation.dataset import ID
from curation.errors import StepError
from curation.models.clustering import cluster_complexity, density_quotas, size_histogram
from curation.sidefiles import read_npy
from curation.stages.base import StageStats, StepContext, split_keys
from curation.stages.removals import write_removals
from curation.stages.semantic import (
    CLUSTER,
    DISTANCE,
    KEY,
    PRIORITY,
    ClusteredStage,
    splitmix64,
)

RANK = REDUNDANCY_RANK  # 0-based position of a pruned document in its cluster's keep order
SURVIVOR = "survivor"  # key of the document a pruned one is attributed to


def ranks_within_clusters(clusters: np.ndarray, priority: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each row in its cluster's keep order: highest priority first, ties by key."""
    order = np.lexsort((keys, -priority, clusters))
    sorted_clusters = clusters[order]
    starts = np.searchsorted(sorted_clusters, sorted_clusters, side="left")
    ranks = np.zeros(len(clusters), dtype=np.int64)
    ranks[order] = np.arange(len(order)) - starts
    return ranks


def representatives(
    clusters: np.ndarray, distance: np.ndarray, keys: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster with a kept row: (cluster ids, row of its kept document nearest the centroid,
    ties by key): the document a pruned member of that cluster is attributed to."""
    rows = np.flatnonzero(kept)
    order = rows[np.lexsort((keys[rows], distance[rows], clusters[rows]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = clusters[order][1:] != clusters[order][:-1]
    return clusters[order][first], order[first]


def keep_within_clusters(
    clusters: np.ndarray, priority: np.ndarray, keys: np.ndarray, quotas: np.ndarray
) -> np.ndarray:
    """Boolean mask: in each cluster, the `quotas[cluster]` rows of highest priority (ties by key)."""
    return ranks_within_clusters(clusters, priority, keys) < quotas[clusters]


class RedundancyControlStage(ClusteredStage):
    type_name = "redundancy-control"
    steps = ("embed", "kmeans", "assign", "prune", "filter")
    reduce_step = "prune"
    reason = "redundancy-pruned"
    cluster_column = "redundancy_cluster"
    partition_budget = "clusters"
    with_embeddings = False
    removals_schema = pa.schema([(KEY, pa.uint64()), (CLUSTER, pa.int32()), (RANK, pa.int64()),
                                 (DUP_OF, pa.string()), (SURVIVOR, pa.uint64())])

    def priorities(self, table: pa.Table, keys: np.ndarray, distance: np.ndarray) -> np.ndarray:
        if self.params.drop_prototypical:
            return distance.astype(np.float64)
        return (splitmix64(keys, self.params.seed) >> np.uint64(11)).astype(np.float64)

    def quotas(self, ctx: StepContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cluster sizes, complexity, keep quotas) from the assign ranks' aggregates."""
        p = self.params
        centroids = self.centroids(ctx)
        sizes, distance_sums = self.cluster_stats(ctx, len(centroids))
        intra = np.divide(distance_sums, sizes, out=np.zeros(len(sizes)), where=sizes > 0)
        complexity = cluster_complexity(intra, centroids, p.neighbours)
        return sizes, complexity, density_quotas(sizes, complexity, p.keep_fraction, p.temperature)

    def step_prune(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        stats = StageStats()  # started now: its `seconds` time the step
        dim, partitions = self.my_partitions(ctx, rank, world_size)
        schema = self.assign_schema(dim)
        sizes, complexity, quotas = self.quotas(ctx)
        removed: list[pa.Table] = []
        mine: list[np.ndarray] = []
        for partition in partitions:  # one partition in memory at a time
            table = ctx.read_partition("assign", partition, schema, writer="assign")
            if table.num_rows == 0:
                continue
            clusters = table.column(CLUSTER).to_numpy()
            here = np.bincount(clusters, minlength=len(sizes))
            present = np.flatnonzero(here)
            if not np.array_equal(here[present], sizes[present]):
                raise StepError(
                    f"{ctx.step.id}: partition {partition} does not match the assign "
                    "statistics; rerun the assign step"
                )
            mine.append(present)
            keys = table.column(KEY).to_numpy()
            ranks = ranks_within_clusters(clusters, table.column(PRIORITY).to_numpy(), keys)
            kept = ranks < quotas[clusters]
            gone = np.flatnonzero(~kept)
            # Every non-empty cluster keeps at least one document (density_quotas), so each pruned
            # one is attributed to a kept member of its own cluster.
            ids, at = representatives(clusters, table.column(DISTANCE).to_numpy(), keys, kept)
            survivor = at[np.searchsorted(ids, clusters[gone])]
            removed.append(
                pa.table(
                    {
                        KEY: pa.array(keys[gone], pa.uint64()),
                        CLUSTER: pa.array(clusters[gone], pa.int32()),
                        RANK: pa.array(ranks[gone], pa.int64()),
                        DUP_OF: pc.cast(table.column(ID), pa.string()).take(pa.array(survivor, pa.int64())),
                        SURVIVOR: pa.array(keys[survivor], pa.uint64()),
                    },
                    schema=self.removals_schema,
                )
            )
        out = pa.concat_tables(removed) if removed else self.removals_schema.empty_table()
        write_removals(ctx.scratch.join(self.reduce_step, f"r{rank:05d}.parquet"), out)
        clusters_here = np.concatenate(mine) if mine else np.zeros(0, np.int64)
        stats.extra = {"kmeans_cluster_sizes": size_histogram(sizes[clusters_here])}
        if rank == 0:  # global figures: reported once, not added up over ranks
            stats.extra.update(self._pruning_summary(sizes, complexity, quotas))
        return stats.to_dict()

    @staticmethod
    def _pruning_summary(sizes: np.ndarray, complexity: np.ndarray, quotas: np.ndarray) -> dict[str, Any]:
        """How hard clusters of each density were pruned (for the report): deciles of complexity."""
        kept = np.divide(quotas, sizes, out=np.ones(len(sizes)), where=sizes > 0)
        order = np.argsort(complexity)
        deciles = np.array_split(order, min(10, len(order)))
        return {
            "keep_fraction_by_complexity_decile": [
                round(float(quotas[d].sum() / max(1, sizes[d].sum())), 3) for d in deciles if len(d)
            ],
            "min_cluster_keep_fraction": round(float(kept[sizes > 0].min()), 3) if (sizes > 0).any() else 1.0,
        }

    def evidence(self, ctx: StepContext, shard: int, removed: pa.Table) -> dict[str, Any]:
        """The kept document nearest the cluster's centroid as `dup_of` (also the group's name), the
        cosine between the two embeddings (read by row from the embed side files) and the rank."""
        n = removed.num_rows
        dup_of = removed.column(DUP_OF).combine_chunks() if n else pa.array([], pa.string())
        _, rows = split_keys(removed.column(KEY).to_numpy())
        survivor = removed.column(SURVIVOR).to_numpy()
        similarity = np.zeros(n, dtype=np.float64)
        if n:
            own = read_npy(self.embedding_file(ctx, shard), rows)  # sorted: removal files are by key
            other = np.zeros_like(own)
            s_shard, s_row = split_keys(survivor)
            for t in np.unique(s_shard).tolist():
                here = np.flatnonzero(s_shard == t)
                wanted = np.unique(s_row[here])
                vectors = read_npy(self.embedding_file(ctx, t), wanted)
                other[here] = vectors[np.searchsorted(wanted, s_row[here])]
            similarity = np.clip(np.sum(own.astype(np.float64) * other, axis=1), -1.0, 1.0)
        rank = removed.column(RANK).combine_chunks() if n else pa.array([], pa.int64())
        return {DUP_OF: dup_of, SIMILARITY: pa.array(similarity, pa.float64()), DUP_GROUP: dup_of, RANK: rank}
