"""semantic-dedup (SemDeDup, Abbas et al. 2023): embed -> k-means -> assign -> per-cluster dedup -> filter.

Steps and the files they pass (all under the stage's scratch folder, written atomically):

- embed (map): `embed/sNNNNN.npy`, one unit-length float32 row per document alive in shard N, in
  the order `ctx.input.read_shard` gives them (so row i is the document with key shard << 32 | i);
- kmeans (global): trains spherical k-means on a seeded sample of at most `kmeansSample`
  documents (read from the side files by row, never every embedding) and writes
  `kmeans/centroids.npy` and `kmeans/plan.json` (documents, clusters, reduce partitions);
- assign (map): each rank assigns its shards' embeddings to the nearest centroid; it writes
  `assign/labels/sNNNNN.npy` (cluster of each document of shard N), one file per (partition,
  rank) of rows (key, id, cluster, distance, priority[, embedding]) for partition
  cluster % partitions, and `assign/stats/rNNNNN.npz` (per-cluster counts and distance sums);
- dedup (reduce): for each of its partitions a rank reads the rows of its clusters (embeddings
  included, so no random reads), finds near-duplicates within each cluster and writes one
  removal file `dedup/rNNNNN.parquet` (key, dup_of, similarity), sorted by key in small row groups;
- filter (map): per shard, reads its key range from every removal file, rejects the removed
  documents (`semantic-duplicate`, with `dup_of` = `dup_group` = id of the survivor and
  `similarity` = their cosine) and annotates every document with its cluster id.

A removed document always names a survivor: within a cluster, documents are visited by priority
(ties by key, so the choice does not depend on the parallelism) and one goes only when it is
within epsilon of a document that stays (`semantic_duplicates`), so no group loses every member.

`ClusteredStage` holds the embed, k-means, assign and filter steps that redundancy-control shares.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import DUP_GROUP, DUP_OF, PARTITION_ROWS, SIMILARITY, partition_count
from curation.dataset import ID, TEXT, Location
from curation.errors import SpecError, StepError
from curation.models.clustering import (
    assign,
    group_sizes,
    semantic_duplicates,
    size_histogram,
    train_kmeans,
)
from curation.sidefiles import missing_file, npy_shape, read_npy, write_npy
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys, split_keys
from curation.stages.removals import read_removals, write_evidence_split, write_removals

KEY, CLUSTER, DISTANCE, PRIORITY, EMBEDDING = "key", "cluster", "distance", "priority", "embedding"


def splitmix64(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per key (stable across runs and machines)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_rows(shard: int, n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a shard in the k-means sample and their sample hash (a document is in the sample
    when its seeded hash falls under `fraction`: the same choice whatever the parallelism)."""
    u = splitmix64(doc_keys(shard, n), seed)
    if fraction >= 1.0:
        return np.arange(n, dtype=np.int64), u
    limit = np.uint64(min(float(np.iinfo(np.uint64).max), fraction * 2.0**64))
    rows = np.flatnonzero(u < limit)
    return rows, u[rows]


# ---- the shared steps ---------------------------------------------------------------------------


class ClusteredStage(Stage):
    """Shared steps of the embedding-cluster stages: embed, kmeans, assign (map) and filter."""

    reduce_step: ClassVar[str]  # the reduce step after assign, which writes the removal files
    reason: ClassVar[str]
    cluster_column: ClassVar[str]
    partition_budget: ClassVar[str]  # entry of PARTITION_ROWS: rows one reduce partition may hold
    with_embeddings: ClassVar[bool]  # the reduce needs the embeddings (they travel in the rows)
    removals_schema: ClassVar[pa.Schema]

    # ---- files -------------------------------------------------------------------------------

    def embedding_file(self, ctx: StepContext, shard: int) -> Location:
        return ctx.scratch.join("embed", f"s{shard:05d}.npy")

    def labels_file(self, ctx: StepContext, shard: int) -> Location:
        return ctx.scratch.join("assign", "labels", f"s{shard:05d}.npy")

    def stats_file(self, ctx: StepContext, rank: int) -> Location:
        return ctx.scratch.join("assign", "stats", f"r{rank:05d}.npz")

    def removal_files(self, ctx: StepContext) -> list[Location]:
        ranks = ctx.peer(self.reduce_step).world_size
        return [ctx.scratch.join(self.reduce_step, f"r{r:05d}.parquet") for r in range(ranks)]

    def kmeans_plan(self, ctx: StepContext) -> dict[str, Any]:
        loc = ctx.scratch.join("kmeans", "plan.json")
        if not loc.exists():
            raise missing_file(loc)
        plan: dict[str, Any] = loc.read_json()
        return plan

    def centroids(self, ctx: StepContext) -> np.ndarray:
        return read_npy(ctx.scratch.join("kmeans", "centroids.npy"))

    def assign_schema(self, dim: int) -> pa.Schema:
        fields = [
            pa.field(KEY, pa.uint64()),
            pa.field(ID, pa.string()),
            pa.field(CLUSTER, pa.int32()),
            pa.field(DISTANCE, pa.float32()),
            pa.field(PRIORITY, pa.float64()),
        ]
        if self.with_embeddings:
            fields.append(pa.field(EMBEDDING, pa.list_(pa.float32(), dim)))
        return pa.schema(fields)

    def cluster_stats(self, ctx: StepContext, clusters: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-cluster document counts and distance sums, added up from every assign rank's file."""
        sizes = np.zeros(clusters, dtype=np.int64)
        sums = np.zeros(clusters, dtype=np.float64)
        for r in range(ctx.peer("assign").world_size):
            loc = self.stats_file(ctx, r)
            if not loc.exists():
                raise missing_file(loc)
            with np.load(io.BytesIO(loc.read_bytes()), allow_pickle=False) as data:
                sizes += data["sizes"]
                sums += data["distance_sums"]
        return sizes, sums

    # ---- embed (map) -------------------------------------------------------------------------

    def step_embed(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        encoder: list[Any] = []  # loaded on the first unfinished shard only

        def embed_shard(shard: int) -> dict[str, Any]:
            if not encoder:
                encoder.append(self._encoder(ctx))
            texts = source.read_shard(shard, columns=[TEXT]).column(TEXT).to_pylist()
            write_npy(self.embedding_file(ctx, shard), encoder[0].encode(texts))
            return {"embedded": len(texts)}

        # Only the filter step reports document counts.
        return self.map_shards(ctx, rank, world_size, embed_shard).to_dict()

    def _encoder(self, ctx: StepContext) -> Any:
        from curation.models.embeddings import Encoder
        from curation.models.loading import load_model

        cfg = self.params.embedding
        loaded = load_model(ctx.models, cfg.model, "encoder")
        return Encoder(loaded, cfg.max_tokens, cfg.batch_tokens, stage_type=self.type_name, step="embed",
                       long_documents=cfg.long_documents, max_chunks=cfg.max_chunks)

    # ---- kmeans (global: a bounded sample only) ------------------------------------------------

    def step_kmeans(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.models.loading import select_device

        stats = StageStats()  # started now: its `seconds` time the step
        p = self.params
        shapes = [npy_shape(self.embedding_file(ctx, s)) for s in range(ctx.num_shards)]
        total = sum(s[0] for s in shapes)
        dim = next((s[1] for s in shapes if len(s) == 2 and s[1]), 1)
        fraction = min(1.0, p.kmeans_sample / max(1, total))
        # The sample: documents whose seeded hash is below `fraction`, trimmed to the smallest
        # `kmeansSample` hashes (memory: the sample, never every embedding).
        hashes: list[np.ndarray] = []
        vectors: list[np.ndarray] = []
        for shard, shape in enumerate(shapes):
            if not shape[0]:
                continue
            rows, u = sample_rows(shard, shape[0], fraction, p.seed)
            if len(rows):
                hashes.append(u)
                vectors.append(read_npy(self.embedding_file(ctx, shard), rows))
        train = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        if len(train) > p.kmeans_sample:
            train = train[np.argsort(np.concatenate(hashes), kind="stable")[: p.kmeans_sample]]
        if len(train) == 0:
            centroids = np.zeros((1, dim), np.float32)
        else:
            centroids = train_kmeans(train, p.clusters, p.kmeans_iterations, p.seed, select_device())
        k = len(centroids)
        reduce_ranks = ctx.peer(self.reduce_step).world_size
        partitions = max(
            reduce_ranks, min(k, partition_count(total, PARTITION_ROWS[self.partition_budget], reduce_ranks))
        )
        write_npy(ctx.scratch.join("kmeans", "centroids.npy"), centroids)
        ctx.scratch.join("kmeans", "plan.json").write_json_atomic(
            {"docs": total, "clusters": k, "dim": int(centroids.shape[1]), "partitions": partitions}
        )
        stats.extra = {"clusters": k, "kmeans_sample_docs": len(train)}
        return stats.to_dict()

    # ---- assign (map) --------------------------------------------------------------------------

    def assign_columns(self, ctx: StepContext, shard: int) -> list[str]:
        """Columns of the input the assign step needs besides the id (for the keep priority)."""
        return []

    def priorities(self, table: pa.Table, keys: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Keep priority of each document (higher survives); default: least prototypical first."""
        return distance.astype(np.float64)

    def step_assign(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.models.loading import select_device

        stats = StageStats()  # started now: its `seconds` time the step
        device = select_device()
        source = self.require_input(ctx)
        plan = self.kmeans_plan(ctx)
        centroids = self.centroids(ctx)
        k, dim, partitions = int(plan["clusters"]), int(plan["dim"]), int(plan["partitions"])
        schema = self.assign_schema(dim)
        # One file per (partition, rank), committed at the end: the rank is the unit of resume.
        writer = PartitionWriter(ctx, "assign", rank, partitions, schema)
        sizes = np.zeros(k, dtype=np.int64)
        distance_sums = np.zeros(k, dtype=np.float64)
        assigned = 0
        for shard in ctx.shards_for(rank, world_size):
            emb = read_npy(self.embedding_file(ctx, shard))
            table = source.read_shard(shard, [ID, *self.assign_columns(ctx, shard)])
            if table.num_rows != len(emb):
                raise StepError(
                    f"{ctx.step.id}: shard {shard} has {table.num_rows} documents but {len(emb)} "
                    "embeddings; rerun the embed step"
                )
            if len(emb) and emb.shape[1] != dim:
                raise StepError(
                    f"{ctx.step.id}: shard {shard} embeddings have dimension {emb.shape[1]}, "
                    f"the centroids {dim}; rerun the embed step"
                )
            labels, distance = assign(emb, centroids, device)
            write_npy(self.labels_file(ctx, shard), labels)
            keys = doc_keys(shard, len(emb))
            sizes += np.bincount(labels, minlength=k)
            distance_sums += np.bincount(labels, weights=distance, minlength=k)
            columns: dict[str, Any] = {
                KEY: pa.array(keys, pa.uint64()),
                ID: table.column(ID).combine_chunks() if table.num_rows else pa.array([], pa.string()),
                CLUSTER: pa.array(labels, pa.int32()),
                DISTANCE: pa.array(distance, pa.float32()),
                PRIORITY: pa.array(self.priorities(table, keys, distance), pa.float64()),
            }
            if self.with_embeddings:
                flat = pa.array(np.ascontiguousarray(emb, dtype=np.float32).ravel(), pa.float32())
                columns[EMBEDDING] = pa.FixedSizeListArray.from_arrays(flat, dim)
            writer.write(pa.table(columns, schema=schema), (labels % partitions).astype(np.int64))
            assigned += len(emb)
        writer.close()
        buffer = io.BytesIO()
        np.savez(buffer, sizes=sizes, distance_sums=distance_sums)
        self.stats_file(ctx, rank).write_bytes_atomic(buffer.getvalue())
        stats.extra = {"assigned_docs": assigned}
        return stats.to_dict()

    def my_partitions(self, ctx: StepContext, rank: int, world_size: int) -> tuple[int, list[int]]:
        plan = self.kmeans_plan(ctx)
        return int(plan["dim"]), list(range(rank, int(plan["partitions"]), world_size))

    # ---- filter (map) --------------------------------------------------------------------------

    def evidence(self, ctx: StepContext, shard: int, removed: pa.Table) -> dict[str, Any]:
        """Evidence columns of the removed documents of one shard (rows of `removed`, in order)."""
        return {}

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        files = self.removal_files(ctx)

        def split(shard: int) -> dict[str, Any]:
            table = source.read_shard(shard, [])
            n = table.num_rows
            labels = read_npy(self.labels_file(ctx, shard))
            removed = read_removals(files, shard, self.removals_schema)
            _, at = split_keys(removed.column(KEY).to_numpy())
            if len(labels) != n or (len(at) and (at.max() >= n or len(np.unique(at)) != len(at))):
                raise StepError(
                    f"{ctx.step.id}: cluster files do not match shard {shard} ({n} documents); rerun the stage"
                )
            table = table.append_column(self.cluster_column, pa.array(labels, pa.int32()))
            return write_evidence_split(self, ctx, shard, table, at, self.reason, self.evidence(ctx, shard, removed))

        return self.map_shards(ctx, rank, world_size, split).to_dict()


# ---- semantic-dedup -------------------------------------------------------------------------------


class SemanticDedupStage(ClusteredStage):
    type_name = "semantic-dedup"
    steps = ("embed", "kmeans", "assign", "dedup", "filter")
    reduce_step = "dedup"
    reason = "semantic-duplicate"
    cluster_column = "semantic_cluster"
    partition_budget = "embeddings"
    with_embeddings = True
    removals_schema = pa.schema([(KEY, pa.uint64()), (DUP_OF, pa.string()), (SIMILARITY, pa.float64())])

    def assign_columns(self, ctx: StepContext, shard: int) -> list[str]:
        if self.params.keep == "farthest-from-centroid":
            return []
        column = self.params.quality_column
        if column not in self.require_input(ctx).schema(shard).names:
            raise SpecError(
                f"stage {self.name}: keep highest-quality needs column '{column}' in its input; add a "
                "quality-score stage before it or set qualityColumn"
            )
        return [column]

    def priorities(self, table: pa.Table, keys: np.ndarray, distance: np.ndarray) -> np.ndarray:
        if self.params.keep == "farthest-from-centroid":
            return distance.astype(np.float64)
        values = pc.cast(table.column(self.params.quality_column), pa.float64())
        values = np.asarray(
            pc.fill_null(values, float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64
        )
        return np.where(np.isnan(values), -np.inf, values)

    def step_dedup(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        from curation.models.loading import select_device

        stats = StageStats()  # started now: its `seconds` time the step
        device = select_device()
        dim, partitions = self.my_partitions(ctx, rank, world_size)
        schema = self.assign_schema(dim)
        removed: list[pa.Table] = []
        groups: dict[str, int] = {}
        sizes: list[np.ndarray] = []
        for partition in partitions:  # one partition in memory at a time
            table = ctx.read_partition("assign", partition, schema, writer="assign")
            if table.num_rows == 0:
                continue
            # Key order, whatever order the assign ranks' files came in: equal priorities (exact
            # copies have equal distances) then keep the lowest key, at any parallelism.
            table = table.take(pc.sort_indices(table, [(KEY, "ascending")]))
            clusters = table.column(CLUSTER).to_numpy()
            priority = table.column(PRIORITY).to_numpy()
            emb = table.column(EMBEDDING).combine_chunks().flatten().to_numpy().reshape(-1, dim)
            order = np.argsort(clusters, kind="stable")
            bounds = np.flatnonzero(np.diff(clusters[order])) + 1
            gone: list[np.ndarray] = []
            keeper: list[np.ndarray] = []
            cosine: list[np.ndarray] = []
            for members in np.split(order, bounds):
                sizes.append(np.array([len(members)]))
                dup, nearest, similarity = semantic_duplicates(
                    emb[members], priority[members], self.params.epsilon, device
                )
                gone.append(members[dup])
                keeper.append(members[nearest[dup]])
                cosine.append(similarity[dup])
                for size in group_sizes(nearest):
                    groups[str(size)] = groups.get(str(size), 0) + 1
            rows = pa.array(np.concatenate(gone), pa.int64())
            removed.append(
                pa.table(
                    {
                        KEY: table.column(KEY).take(rows),
                        DUP_OF: table.column(ID).take(pa.array(np.concatenate(keeper), pa.int64())),
                        SIMILARITY: pa.array(np.concatenate(cosine).astype(np.float64), pa.float64()),
                    },
                    schema=self.removals_schema,
                )
            )
        out = pa.concat_tables(removed) if removed else self.removals_schema.empty_table()
        write_removals(ctx.scratch.join(self.reduce_step, f"r{rank:05d}.parquet"), out)
        stats.extra = {
            "cluster_sizes": dict(sorted(groups.items(), key=lambda kv: int(kv[0]))),
            "kmeans_cluster_sizes": size_histogram(np.concatenate(sizes)) if sizes else {},
        }
        return stats.to_dict()

    def evidence(self, ctx: StepContext, shard: int, removed: pa.Table) -> dict[str, Any]:
        dup_of = removed.column(DUP_OF).combine_chunks() if removed.num_rows else pa.array([], pa.string())
        similarity = removed.column(SIMILARITY).combine_chunks() if removed.num_rows else pa.array([], pa.float64())
        return {DUP_OF: dup_of, SIMILARITY: similarity, DUP_GROUP: dup_of}
