"""MinHash near-duplicate removal (FineWeb's recipe: word 5-grams, 14 bands x 8 rows).

    signatures (map)     per shard: MinHash signatures (vectorised, `minhash_math`), one 64-bit
                         hash per band; rows (band hash, key, length) go to partition
                         band hash % P, one Parquet file per (partition, rank); P is sized so
                         one partition fits a reduce rank's memory. With `verifyThreshold`, the
                         full signatures are also kept per shard.
    buckets (reduce)     rank r groups equal band hashes of its partitions over all ranks and links
                         every member of a bucket to the bucket's smallest key (O(n) edges, not
                         all pairs); optionally drops edges whose signatures agree less than
                         `verifyThreshold`
    components (global)  union-find over the edges only (they grow with duplicates, not with the
                         corpus); one survivor per component (`keep`);
                         the removal list (key, id of the survivor) sorted by key; cluster sizes
    filter (map)         per shard: removed rows get reason `near-duplicate` and `dup_of`

Band hashes are seeded with the band index, so a bucket is identified by the hash alone and any
partition count works.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import PARTITION_ROWS, partition_count
from curation.dataset import ID, TEXT, read_table, write_table_atomic
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys
from curation.stages.exact_dedup import filter_removals, write_removals
from curation.stages.minhash_math import (
    band_hashes,
    connected_components,
    has_shingles,
    signatures,
    size_histogram,
    survivors,
)

REASON = "near-duplicate"
BAND_SCHEMA = pa.schema([("band_hash", pa.uint64()), ("key", pa.uint64()), ("length", pa.int64())])
EDGE_SCHEMA = pa.schema(
    [("u", pa.uint64()), ("v", pa.uint64()), ("u_length", pa.int64()), ("v_length", pa.int64())]
)
VERIFY_BLOCK = 1 << 16  # edges compared at once (x num_perm bytes)
SLICE_DOCS = 1 << 16  # documents whose signatures are held at once (x num_perm x 4 bytes)
REMOVALS = "removals.parquet"


# ---- pure functions ----------------------------------------------------------------------------


def bucket_edges(band_hash: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (member, bucket's smallest key) linking each bucket member to its first member.

    Equal (member, first) pairs from several bands are kept once."""
    order = np.lexsort((keys, band_hash))
    h = band_hash[order]
    start = np.ones(len(order), dtype=bool)
    start[1:] = h[1:] != h[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))
    member, head = order[~start], order[first[~start]]
    if not len(member):
        return member, head
    pair_order = np.lexsort((keys[head], keys[member]))
    member, head = member[pair_order], head[pair_order]
    fresh = np.ones(len(member), dtype=bool)
    fresh[1:] = (keys[member][1:] != keys[member][:-1]) | (keys[head][1:] != keys[head][:-1])
    return member[fresh], head[fresh]


def signature_agreement(sig_u: np.ndarray, sig_v: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values per pair: an unbiased estimate of Jaccard similarity."""
    out = np.empty(len(sig_u), dtype=np.float64)
    for i in range(0, len(sig_u), VERIFY_BLOCK):
        out[i : i + VERIFY_BLOCK] = (sig_u[i : i + VERIFY_BLOCK] == sig_v[i : i + VERIFY_BLOCK]).mean(axis=1)
    return out


def _sig_array(column: pa.ChunkedArray, num_perm: int) -> np.ndarray:
    arr = column.combine_chunks()
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint32)
    return raw[arr.offset * num_perm : (arr.offset + len(arr)) * num_perm].reshape(-1, num_perm)


# ---- the stage ---------------------------------------------------------------------------------


class MinHashDedupStage(Stage):
    type_name = "minhash-dedup"
    steps = ("signatures", "buckets", "components", "filter")

    def _sig_file(self, ctx: StepContext, shard: int) -> Any:
        return ctx.scratch.join("sigs", f"s{shard:05d}.parquet")

    def _partitions(self, ctx: StepContext) -> int:
        rows = (ctx.input.corpus.rows if ctx.input else 0) * self.params.bands
        return partition_count(rows, PARTITION_ROWS["bands"], ctx.peer("buckets").world_size)

    def step_signatures(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        p = self.params
        writer = PartitionWriter(ctx, "signatures", rank, self._partitions(ctx), BAND_SCHEMA)
        documents = 0
        for shard in ctx.shards_for(rank, world_size):
            texts = source.read_shard(shard, columns=[TEXT]).column(TEXT)
            texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
            sigs = [np.zeros((0, p.num_perm), np.uint32)]
            for start in range(0, len(texts), SLICE_DOCS):  # bounds the signature matrix of big shards
                part = signatures(texts.slice(start, SLICE_DOCS), p.ngram, p.num_perm, p.seed, p.lowercase,
                                  tokenizer=p.tokenizer)
                # Documents without shingles enter no bucket: they would share every band.
                signed = has_shingles(part)
                bands = band_hashes(part[signed], p.bands, p.rows_per_band)
                lengths = pc.utf8_length(texts.slice(start, SLICE_DOCS)).to_numpy(zero_copy_only=False)[signed]
                keys = doc_keys(shard, len(texts))[start : start + SLICE_DOCS][signed]
                band_hash = bands.ravel()
                rows = pa.table(
                    {
                        "band_hash": band_hash,
                        "key": np.repeat(keys, bands.shape[1]),
                        "length": np.repeat(lengths.astype(np.int64), bands.shape[1]),
                    },
                    schema=BAND_SCHEMA,
                )
                writer.write(rows, (band_hash % np.uint64(writer.count)).astype(np.int64))
                if p.verify_threshold is not None:
                    sigs.append(part)
            if p.verify_threshold is not None:
                matrix = np.ascontiguousarray(np.concatenate(sigs))
                blob = pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(4 * p.num_perm), len(matrix), [None, pa.py_buffer(matrix.tobytes())]
                )
                write_table_atomic(self._sig_file(ctx, shard), pa.table({"sig": blob}))
            documents += len(texts)
        writer.close()
        # The signatures step reports no document counts: only the filter step does.
        stats = StageStats()
        stats.extra = {"signed": documents}
        return stats.to_dict()

    def step_buckets(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        edges: list[pa.Table] = []
        candidates = failed = 0
        for partition in range(rank, self._partitions(ctx), world_size):
            table = ctx.read_partition("signatures", partition, BAND_SCHEMA)
            band_hash, keys, lengths = (table.column(c).to_numpy() for c in ("band_hash", "key", "length"))
            member, head = bucket_edges(band_hash, keys)
            candidates += len(member)
            if self.params.verify_threshold is not None and len(member):
                keep = self._verify(ctx, keys[member], keys[head]) >= self.params.verify_threshold
                failed += int((~keep).sum())
                member, head = member[keep], head[keep]
            edges.append(pa.table(
                {"u": keys[member], "v": keys[head], "u_length": lengths[member], "v_length": lengths[head]},
                schema=EDGE_SCHEMA,
            ))
        table = pa.concat_tables(edges) if edges else EDGE_SCHEMA.empty_table()
        write_table_atomic(ctx.scratch.join("buckets", f"r{rank:05d}.parquet"), table)
        stats = StageStats()
        stats.extra = {"candidate_pairs": candidates}
        if self.params.verify_threshold is not None:
            stats.extra["pairs_failed_verification"] = failed
        return stats.to_dict()

    def _verify(self, ctx: StepContext, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Signature agreement of each (u, v), loading only the signatures of the shards involved."""
        num_perm = self.params.num_perm
        nodes = np.unique(np.concatenate([u, v]))
        shard_of = (nodes >> np.uint64(32)).astype(np.int64)
        sig = np.empty((len(nodes), num_perm), dtype=np.uint32)
        for shard in np.unique(shard_of).tolist():
            mat = _sig_array(read_table(self._sig_file(ctx, shard)).column("sig"), num_perm)
            here = shard_of == shard
            sig[here] = mat[(nodes[here] & np.uint64(0xFFFFFFFF)).astype(np.int64)]
        return signature_agreement(sig[np.searchsorted(nodes, u)], sig[np.searchsorted(nodes, v)])

    def step_components(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        bucket_ranks = ctx.peer("buckets").world_size
        files = [ctx.scratch.join("buckets", f"r{r:05d}.parquet") for r in range(bucket_ranks)]
        edges = pa.concat_tables([read_table(f) for f in files])
        u, v = edges.column("u").to_numpy(), edges.column("v").to_numpy()
        stats = StageStats()
        if not len(u):
            write_removals(ctx.scratch.join("components", REMOVALS), np.zeros(0, np.uint64), [])
            return stats.to_dict()
        nodes, roots = connected_components(u, v)
        lengths = None
        if self.params.keep == "longest":
            lengths = np.zeros(len(nodes), dtype=np.int64)
            lengths[np.searchsorted(nodes, u)] = edges.column("u_length").to_numpy()
            lengths[np.searchsorted(nodes, v)] = edges.column("v_length").to_numpy()
        keepers = survivors(nodes, roots, lengths)
        removed = nodes != keepers
        dup_of = self._ids_of(ctx, keepers[removed])
        write_removals(ctx.scratch.join("components", REMOVALS), nodes[removed], dup_of)
        _, sizes = np.unique(roots, return_counts=True)
        stats.extra = {"cluster_sizes": size_histogram(sizes), "clusters": int(len(sizes))}
        return stats.to_dict()

    def _ids_of(self, ctx: StepContext, keys: np.ndarray) -> pa.Array:
        """Document ids of `keys`, reading only the `id` column of the shards they live in."""
        wanted = np.unique(keys)
        shard_of = (wanted >> np.uint64(32)).astype(np.int64)
        ids = np.empty(len(wanted), dtype=object)
        source = self.require_input(ctx)
        for shard in np.unique(shard_of).tolist():
            here = shard_of == shard
            rows = (wanted[here] & np.uint64(0xFFFFFFFF)).astype(np.int64)
            column = pc.cast(source.read_shard(shard, columns=[ID]).column(ID), pa.string())
            ids[here] = column.take(pa.array(rows)).to_numpy(zero_copy_only=False)
        return pa.array(ids[np.searchsorted(wanted, keys)], pa.string())

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        return filter_removals(self, ctx, rank, world_size, [ctx.scratch.join("components", REMOVALS)], REASON)
