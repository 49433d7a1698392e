"""semantic-dedup (SemDeDup, Abbas et al. 2023): embed -> k-means -> per-cluster dedup -> filter.

Steps and the files they pass (all under the stage's scratch folder, written atomically):

- embed (map): `embed/sNNNNN.npy`, one unit-length float32 row per document of input shard N;
- kmeans (global): trains spherical k-means on a seeded sample, assigns every document and
  writes `kmeans/pPPPPP/sNNNNN.parquet` (key, cluster, centroid distance, keep priority) for
  the reduce partition P = cluster % world size;
- dedup (reduce): rank P loads its clusters' embeddings, finds near-duplicates in blocks and
  writes `dedup/pPPPPP/sNNNNN.parquet` (removed key, key of the document it duplicates);
- filter (map): drops the removed documents (`semantic-duplicate`) and annotates the kept ones
  with their cluster id.

`ClusteredStage` holds the embed, k-means and filter steps that redundancy-control shares.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from curation.dataset import TEXT, Location, parquet_schema, read_table, write_table_atomic
from curation.errors import SpecError, StepError
from curation.models.clustering import (
    assign,
    group_sizes,
    semantic_duplicates,
    size_histogram,
    train_kmeans,
)
from curation.plan import find_step
from curation.stages.base import Stage, StepContext, doc_keys, split_keys

KEY, CLUSTER, DISTANCE, PRIORITY, DUPLICATE_OF = "key", "cluster", "distance", "priority", "duplicate_of"


# ---- side files --------------------------------------------------------------------------------


def write_npy(loc: Location, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    loc.write_bytes_atomic(buffer.getvalue())


def read_npy(loc: Location, rows: np.ndarray | None = None) -> np.ndarray:
    """Read a .npy side file (memory-mapped on local disks, so `rows` reads only those rows)."""
    if not loc.exists():
        raise StepError(f"{loc.path}: missing (did the embed step finish?)")
    if isinstance(loc.fs, pafs.LocalFileSystem):
        data = np.load(loc.path, mmap_mode="r", allow_pickle=False)
    else:
        data = np.load(io.BytesIO(loc.read_bytes()), allow_pickle=False)
    return np.asarray(data if rows is None else data[rows])


def splitmix64(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per key (stable across runs and machines)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_mask(n: int, fraction: float, seed: int, shard: int) -> np.ndarray:
    if fraction >= 1.0:
        return np.ones(n, dtype=bool)
    return np.random.default_rng([seed, shard]).random(n) < fraction


class ClusteredStage(Stage):
    """Shared steps of the embedding-cluster stages: embed (map), kmeans (global), filter (map)."""

    reduce_step: ClassVar[str]  # the reduce step after kmeans, which writes removed keys
    reason: ClassVar[str]
    cluster_column: ClassVar[str]

    # ---- embed ------------------------------------------------------------------------------

    def embedding_file(self, ctx: StepContext, shard: int) -> Location:
        return ctx.scratch.join("embed", f"s{shard:05d}.npy")

    def step_embed(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        encoder: list[Any] = []  # loaded on the first unfinished shard only

        def embed_shard(shard: int) -> dict[str, Any]:
            if not encoder:
                encoder.append(self._encoder(ctx))
            texts = source.read_shard(shard, columns=[TEXT]).column(TEXT).to_pylist()
            write_npy(self.embedding_file(ctx, shard), encoder[0].encode(texts))
            return {"docs_in": len(texts), "docs_out": len(texts)}

        return self.map_shards(ctx, rank, world_size, embed_shard).to_dict()

    def _encoder(self, ctx: StepContext) -> Any:
        from curation.models.embeddings import Encoder
        from curation.models.loading import load_model

        cfg = self.params.embedding
        loaded = load_model(ctx.models, cfg.model, "encoder")
        return Encoder(loaded, cfg.max_tokens, cfg.batch_tokens, stage_type=self.type_name, step="embed")

    # ---- kmeans ------------------------------------------------------------------------------

    def reduce_world_size(self) -> int:
        return find_step(self.spec, f"{self.name}.{self.reduce_step}").world_size

    def priorities(self, ctx: StepContext, shard: int, keys: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Keep priority of each document (higher survives); default: least prototypical first."""
        return distance.astype(np.float64)

    def after_assignment(
        self, ctx: StepContext, sizes: np.ndarray, distance_sums: np.ndarray, centroids: np.ndarray
    ) -> dict[str, Any]:
        """Hook for work that needs global cluster statistics; returns extra statistics."""
        return {}

    def step_kmeans(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.models.loading import select_device

        p = self.params
        device = select_device()
        shards = range(ctx.num_shards)
        counts = [read_npy(self.embedding_file(ctx, s)).shape[0] for s in shards]
        total_docs = sum(counts)
        fraction = min(1.0, p.kmeans_sample / max(1, total_docs))
        sample = [
            read_npy(self.embedding_file(ctx, s))[sample_mask(counts[s], fraction, p.seed, s)] for s in shards
        ]
        train = np.concatenate(sample) if sample else np.zeros((0, 1), np.float32)
        if len(train) == 0:
            centroids = np.zeros((1, 1), np.float32)
        else:
            centroids = train_kmeans(train, p.clusters, p.kmeans_iterations, p.seed, device)
        write_npy(ctx.scratch.join("kmeans", "centroids.npy"), centroids)
        k = len(centroids)
        sizes = np.zeros(k, dtype=np.int64)
        distance_sums = np.zeros(k, dtype=np.float64)
        partitions = self.reduce_world_size()
        for shard in shards:
            emb = read_npy(self.embedding_file(ctx, shard))
            labels, distance = (
                assign(emb, centroids, device)
                if len(emb)
                else (np.zeros(0, np.int32), np.zeros(0, np.float32))
            )
            keys = doc_keys(shard, len(emb))
            priority = self.priorities(ctx, shard, keys, distance)
            sizes += np.bincount(labels, minlength=k)
            distance_sums += np.bincount(labels, weights=distance, minlength=k)
            table = pa.table({KEY: keys, CLUSTER: labels, DISTANCE: distance, PRIORITY: priority})
            part = labels % partitions
            for partition in range(partitions):
                write_table_atomic(
                    ctx.partition_file("kmeans", partition, shard), table.filter(pa.array(part == partition))
                )
        extra = {
            "clusters": k,
            "kmeans_cluster_sizes": size_histogram(sizes),
            **self.after_assignment(ctx, sizes, distance_sums, centroids),
        }
        return {"docs_in": total_docs, "docs_out": total_docs, "extra": extra}

    def read_partition(self, ctx: StepContext, partition: int) -> pa.Table:
        tables = [read_table(ctx.partition_file("kmeans", partition, s)) for s in range(ctx.num_shards)]
        return pa.concat_tables(tables) if tables else pa.table({KEY: pa.array([], pa.uint64())})

    def write_removed(
        self, ctx: StepContext, partition: int, removed: np.ndarray, duplicate_of: np.ndarray | None = None
    ) -> None:
        """Removed keys of one reduce partition, one file per shard (all shards, maybe empty)."""
        shard_of, _ = split_keys(removed)
        for shard in range(ctx.num_shards):
            mine = shard_of == shard
            cols = {KEY: pa.array(removed[mine], pa.uint64())}
            if duplicate_of is not None:
                cols[DUPLICATE_OF] = pa.array(duplicate_of[mine], pa.uint64())
            write_table_atomic(ctx.partition_file(self.reduce_step, partition, shard), pa.table(cols))

    # ---- filter ------------------------------------------------------------------------------

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        partitions = self.reduce_world_size()

        def decide(table: pa.Table, shard: int) -> tuple[list[str | None], pa.Table]:
            n = table.num_rows
            cluster = np.full(n, -1, dtype=np.int32)
            removed = np.zeros(n, dtype=bool)
            for partition in range(partitions):
                assigned = read_table(ctx.partition_file("kmeans", partition, shard), columns=[KEY, CLUSTER])
                _, at = split_keys(assigned.column(KEY).to_numpy())
                cluster[at] = assigned.column(CLUSTER).to_numpy()
                dropped = read_table(ctx.partition_file(self.reduce_step, partition, shard), columns=[KEY])
                removed[split_keys(dropped.column(KEY).to_numpy())[1]] = True
            if n and (cluster < 0).any():
                raise StepError(f"{ctx.step.id}: shard {shard} has documents without a cluster; rerun kmeans")
            reasons: list[str | None] = [self.reason if r else None for r in removed]
            kept = table.filter(pa.array(~removed))
            if self.cluster_column in kept.column_names:
                kept = kept.drop_columns([self.cluster_column])
            kept = kept.append_column(self.cluster_column, pa.array(cluster[~removed], pa.int32()))
            return reasons, kept

        return self.filter_shards(ctx, rank, world_size, decide)


class SemanticDedupStage(ClusteredStage):
    type_name = "semantic-dedup"
    steps = ("embed", "kmeans", "dedup", "filter")
    reduce_step = "dedup"
    reason = "semantic-duplicate"
    cluster_column = "semantic_cluster"

    def priorities(self, ctx: StepContext, shard: int, keys: np.ndarray, distance: np.ndarray) -> np.ndarray:
        if self.params.keep == "farthest-from-centroid":
            return distance.astype(np.float64)
        column = self.params.quality_column
        source = self.require_input(ctx)
        if column not in parquet_schema(source.shard(shard)).names:
            raise SpecError(
                f"stage {self.name}: keep highest-quality needs column '{column}' in its input; add a "
                "quality-score stage before it or set qualityColumn"
            )
        values = source.read_shard(shard, columns=[column]).column(column)
        values = values.to_numpy(zero_copy_only=False).astype(np.float64)
        return np.where(np.isnan(values), -np.inf, values)

    def step_dedup(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.models.loading import select_device

        device = select_device()
        table = self.read_partition(ctx, rank)
        keys = table.column(KEY).to_numpy().astype(np.uint64)
        clusters = table.column(CLUSTER).to_numpy()
        priority = table.column(PRIORITY).to_numpy()
        emb = self._embeddings(ctx, keys)
        removed: list[np.ndarray] = []
        duplicate_of: list[np.ndarray] = []
        groups: dict[str, int] = {}
        order = np.argsort(clusters, kind="stable")
        bounds = np.flatnonzero(np.diff(clusters[order])) + 1
        for members in np.split(order, bounds) if len(order) else []:
            dup, nearest = semantic_duplicates(emb[members], priority[members], self.params.epsilon, device)
            removed.append(keys[members[dup]])
            duplicate_of.append(keys[members[nearest[dup]]])
            for size in group_sizes(nearest):
                groups[str(size)] = groups.get(str(size), 0) + 1
        gone = np.concatenate(removed) if removed else np.zeros(0, np.uint64)
        self.write_removed(ctx, rank, gone, np.concatenate(duplicate_of) if duplicate_of else gone)
        extra = {"cluster_sizes": dict(sorted(groups.items(), key=lambda kv: int(kv[0])))}
        return {"docs_in": len(keys), "docs_out": len(keys) - len(gone), "extra": extra}

    def _embeddings(self, ctx: StepContext, keys: np.ndarray) -> np.ndarray:
        """Rows of the embed side files for `keys`, in the same order."""
        shards, rows = split_keys(keys)
        dim = read_npy(ctx.scratch.join("kmeans", "centroids.npy")).shape[1]
        out = np.zeros((len(keys), dim), dtype=np.float32)
        for shard in np.unique(shards):
            mine = np.flatnonzero(shards == shard)
            out[mine] = read_npy(self.embedding_file(ctx, int(shard)), rows[mine])
        return out
