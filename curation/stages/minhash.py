"""MinHash near-duplicate removal (FineWeb's recipe: word 5-grams, 14 bands x 8 rows).

    signatures (map)     per shard: MinHash signatures (vectorised, `minhash_math`), one 64-bit
                         hash per band; rows (band hash, key, length) go to partition
                         band hash % P, one Parquet file per (partition, rank); P is sized so
                         one partition fits a reduce rank's memory. Side files per shard: the
                         signatures (`sigs/`, rows x bands*rowsPerBand uint32: the evidence's
                         estimate) and, with `verify: text`, every document's shingle set
                         (`shingles/`: sorted distinct 32-bit shingle keys and offsets)
    buckets (reduce)     rank r groups equal band hashes of its partitions over all ranks and links
                         every member of a bucket to the bucket's smallest key (O(n) edges, not
                         all pairs); the candidate pairs go to pair partitions (a hash of the
                         member), so a pair found in several bands lands in one partition
    verify (reduce)      per pair partition: each candidate pair once; with `verify`, its signature
                         agreement or the exact Jaccard of the two shingle sets (read by row from the
                         side files, in batches of bounded size) must reach `verifyThreshold`;
                         writes the edges, counts the rejected pairs and samples a few
    components (global)  union-find over the edges only (they grow with duplicates, not with the
                         corpus); one survivor per component (`keep`); the removal list (key, the
                         survivor's key, the component's first member's key) sorted by key, and the
                         id requests (owner key, removed key, kind) sorted by owner: keys only
    names (map)          per shard: the ids of the survivors and first members it holds (one read of
                         its id column), sent to partitions that follow the filter's ranks, one
                         file per (partition, rank): no rank ever holds the corpus's ids
    filter (map)         per shard: removed rows get reason `near-duplicate`, `dup_of` (the
                         survivor's id, from its names partition), `similarity_estimate` (signature agreement with the survivor),
                         `similarity` (the exact shingle Jaccard with `verify: text`, else the
                         estimate) and `dup_group`; the survivors' side-file rows are read by row

Band hashes are seeded with the band index, so a bucket is identified by the hash alone and any
partition count works.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.corpus import (
    DUP_GROUP,
    DUP_OF,
    PARTITION_ROWS,
    SIMILARITY,
    SIMILARITY_ESTIMATE,
    partition_count,
)
from curation.dataset import ID, TEXT, Location, read_table, write_table_atomic
from curation.errors import StepError
from curation.sidefiles import read_npy, write_npy
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys, split_keys
from curation.stages.minhash_math import (
    band_hashes,
    connected_components,
    fmix64,
    has_shingles,
    pair_jaccard,
    signatures_and_shingles,
    size_histogram,
    sorted_unique,
    survivors,
)
from curation.stages.removals import (
    read_key_range,
    read_removals,
    removal_rows,
    write_evidence_split,
    write_removals,
    write_sorted,
)

REASON = "near-duplicate"
BAND_SCHEMA = pa.schema([("band_hash", pa.uint64()), ("key", pa.uint64()), ("length", pa.int64())])
EDGE_SCHEMA = pa.schema(
    [("u", pa.uint64()), ("v", pa.uint64()), ("u_length", pa.int64()), ("v_length", pa.int64())]
)
REMOVALS_SCHEMA = pa.schema([("key", pa.uint64()), ("survivor", pa.uint64()), ("root", pa.uint64())])
# Ids the evidence needs, asked of the shard that holds them: `owner` (a survivor's or a group's
# first member's key), `consumer` (the removed document's key), `kind` (DUP_OF or DUP_GROUP).
REQUESTS_SCHEMA = pa.schema([("owner", pa.uint64()), ("consumer", pa.uint64()), ("kind", pa.uint8())])
NAMES_SCHEMA = pa.schema([("consumer", pa.uint64()), ("kind", pa.uint8()), ("id", pa.string())])
KIND_DUP_OF, KIND_GROUP = 0, 1
REQUESTS = "requests.parquet"
VERIFY_BLOCK = 1 << 16  # pairs whose signatures are compared at once (x 2 x num_perm x 4 bytes)
VERIFY_KEYS = 1 << 23  # shingle keys of the pairs Jaccard-compared at once (x ~24 bytes at the peak)
SLICE_DOCS = 1 << 16  # documents whose signatures are held at once (x num_perm x 4 bytes)
REJECTED_SAMPLE = 20  # rejected candidate pairs kept for the report (over all verify ranks)
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


def unique_pairs(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct (u, v), sorted by (u, v)."""
    order = np.lexsort((v, u))
    fresh = np.ones(len(order), dtype=bool)
    fresh[1:] = (u[order][1:] != u[order][:-1]) | (v[order][1:] != v[order][:-1])
    return order[fresh]


def signature_agreement(sig_u: np.ndarray, sig_v: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values per pair: an unbiased estimate of Jaccard similarity."""
    out = np.empty(len(sig_u), dtype=np.float64)
    for i in range(0, len(sig_u), VERIFY_BLOCK):
        out[i : i + VERIFY_BLOCK] = (sig_u[i : i + VERIFY_BLOCK] == sig_v[i : i + VERIFY_BLOCK]).mean(axis=1)
    return out


def range_indices(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for each (s, n), vectorised."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not total:
        return np.zeros(0, np.int64)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(sizes) - sizes), sizes)
    return shift + np.arange(total, dtype=np.int64)


def pair_batches(sizes: np.ndarray, budget: int) -> Iterator[slice]:
    """Consecutive slices of pairs whose summed sizes stay within `budget` (a pair larger than
    the budget is a batch alone)."""
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    i, n = 0, len(ends)
    while i < n:
        base = ends[i - 1] if i else 0
        j = max(i + 1, int(np.searchsorted(ends, base + budget, side="right")))
        yield slice(i, min(j, n))
        i = j


# ---- the stage ---------------------------------------------------------------------------------


class MinHashDedupStage(Stage):
    type_name = "minhash-dedup"
    steps = ("signatures", "buckets", "verify", "components", "names", "filter")

    # ---- side files ------------------------------------------------------------------------

    def _sig_file(self, ctx: StepContext, shard: int) -> Location:
        return ctx.scratch.join("sigs", f"s{shard:05d}.npy")

    def _set_files(self, ctx: StepContext, shard: int) -> tuple[Location, Location]:
        return (ctx.scratch.join("shingles", f"s{shard:05d}.keys.npy"),
                ctx.scratch.join("shingles", f"s{shard:05d}.offsets.npy"))

    def _partitions(self, ctx: StepContext) -> int:
        rows = (ctx.input.corpus.rows if ctx.input else 0) * self.params.bands
        return partition_count(rows, PARTITION_ROWS["bands"], ctx.peer("buckets").world_size)

    def _pair_partitions(self, ctx: StepContext) -> int:
        # A document is a member of at most one pair per band: the band budget bounds the pairs too.
        rows = (ctx.input.corpus.rows if ctx.input else 0) * self.params.bands
        return partition_count(rows, PARTITION_ROWS["bands"], ctx.peer("verify").world_size)

    def read_signatures(self, ctx: StepContext, keys: np.ndarray) -> np.ndarray:
        """Signature rows of `keys` (any order, repeats allowed), read by row from the side files."""
        nodes = sorted_unique(keys)
        inverse = np.searchsorted(nodes, keys)
        shard_of, row_of = split_keys(nodes)
        sig = np.empty((len(nodes), self.params.num_perm), dtype=np.uint32)
        for shard in np.unique(shard_of).tolist():
            here = np.flatnonzero(shard_of == shard)
            sig[here] = read_npy(self._sig_file(ctx, shard), row_of[here])
        return sig[inverse]

    def read_sets(self, ctx: StepContext, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shingle sets of `nodes` (sorted, distinct keys): concatenated keys and each node's size."""
        shard_of, row_of = split_keys(nodes)
        keys: list[np.ndarray] = []
        sizes = np.zeros(len(nodes), dtype=np.int64)
        for shard in np.unique(shard_of).tolist():  # nodes are sorted: each shard is one run
            here = np.flatnonzero(shard_of == shard)
            rows = row_of[here]
            keys_loc, offsets_loc = self._set_files(ctx, shard)
            lookup = sorted_unique(np.concatenate([rows, rows + 1]))
            bounds = read_npy(offsets_loc, lookup)
            start = bounds[np.searchsorted(lookup, rows)]
            stop = bounds[np.searchsorted(lookup, rows + 1)]
            sizes[here] = stop - start
            index = range_indices(start, stop - start)
            keys.append(read_npy(keys_loc, index) if len(index) else np.zeros(0, np.uint32))
        return (np.concatenate(keys) if keys else np.zeros(0, np.uint32)), sizes

    def set_sizes(self, ctx: StepContext, nodes: np.ndarray) -> np.ndarray:
        """Number of distinct shingles of each of `nodes` (sorted, distinct keys)."""
        shard_of, row_of = split_keys(nodes)
        sizes = np.zeros(len(nodes), dtype=np.int64)
        for shard in np.unique(shard_of).tolist():
            here = np.flatnonzero(shard_of == shard)
            rows = row_of[here]
            lookup = sorted_unique(np.concatenate([rows, rows + 1]))
            bounds = read_npy(self._set_files(ctx, shard)[1], lookup)
            sizes[here] = bounds[np.searchsorted(lookup, rows + 1)] - bounds[np.searchsorted(lookup, rows)]
        return sizes

    def exact_jaccard(self, ctx: StepContext, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Exact Jaccard of the shingle sets of each pair (u[i], v[i]), in batches of at most
        VERIFY_KEYS shingle keys: memory stays bounded whatever the number of pairs."""
        out = np.zeros(len(u), dtype=np.float64)
        if not len(u):
            return out
        nodes = sorted_unique(np.concatenate([u, v]))
        size_of = self.set_sizes(ctx, nodes)
        pair_size = size_of[np.searchsorted(nodes, u)] + size_of[np.searchsorted(nodes, v)]
        for batch in pair_batches(pair_size, VERIFY_KEYS):
            bu, bv = u[batch], v[batch]
            here = sorted_unique(np.concatenate([bu, bv]))
            flat, sizes = self.read_sets(ctx, here)
            starts = np.cumsum(sizes) - sizes
            iu, iv = np.searchsorted(here, bu), np.searchsorted(here, bv)
            out[batch] = pair_jaccard(flat[range_indices(starts[iu], sizes[iu])], sizes[iu],
                                      flat[range_indices(starts[iv], sizes[iv])], sizes[iv])
        return out

    def estimate(self, ctx: StepContext, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Signature agreement of each pair (u[i], v[i]), in blocks of VERIFY_BLOCK pairs."""
        out = np.zeros(len(u), dtype=np.float64)
        for i in range(0, len(u), VERIFY_BLOCK):
            block = slice(i, i + VERIFY_BLOCK)
            out[block] = signature_agreement(self.read_signatures(ctx, u[block]), self.read_signatures(ctx, v[block]))
        return out

    # ---- signatures (map) --------------------------------------------------------------------

    def step_signatures(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        p = self.params
        with_sets = p.verify_mode == "text"
        writer = PartitionWriter(ctx, "signatures", rank, self._partitions(ctx), BAND_SCHEMA)
        documents = 0
        shingles = 0
        for shard in ctx.shards_for(rank, world_size):
            texts = source.read_shard(shard, columns=[TEXT]).column(TEXT)
            texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
            sigs = [np.zeros((0, p.num_perm), np.uint32)]
            sets: list[np.ndarray] = []
            sizes: list[np.ndarray] = []
            for start in range(0, len(texts), SLICE_DOCS):  # bounds the signature matrix of big shards
                part, flat, offsets = signatures_and_shingles(
                    texts.slice(start, SLICE_DOCS), p.ngram, p.num_perm, p.seed, p.lowercase,
                    tokenizer=p.tokenizer, with_sets=with_sets,
                )
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
                sigs.append(part)
                if with_sets:
                    sets.append(flat)
                    sizes.append(np.diff(offsets))
            write_npy(self._sig_file(ctx, shard), np.concatenate(sigs))
            if with_sets:
                keys_loc, offsets_loc = self._set_files(ctx, shard)
                flat_all = np.concatenate(sets) if sets else np.zeros(0, np.uint32)
                counts = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
                write_npy(keys_loc, flat_all)
                write_npy(offsets_loc, np.concatenate(([0], np.cumsum(counts))).astype(np.int64))
                shingles += len(flat_all)
            documents += len(texts)
            del texts, sigs, sets, sizes  # before the next shard is read: one shard in memory at a time
        writer.close()
        # The signatures step reports no document counts: only the filter step does.
        stats = StageStats()
        stats.extra = {"signed": documents}
        if with_sets:
            stats.extra["shingles_stored"] = shingles
        return stats.to_dict()

    # ---- buckets (reduce over band partitions) -------------------------------------------------

    def step_buckets(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        pairs = self._pair_partitions(ctx)
        writer = PartitionWriter(ctx, "pairs", rank, pairs, EDGE_SCHEMA)
        candidates = 0
        for partition in range(rank, self._partitions(ctx), world_size):
            table = ctx.read_partition("signatures", partition, BAND_SCHEMA)
            band_hash, keys, lengths = (table.column(c).to_numpy() for c in ("band_hash", "key", "length"))
            member, head = bucket_edges(band_hash, keys)
            candidates += len(member)
            if not len(member):
                continue
            u = keys[member]
            edges = pa.table(
                {"u": u, "v": keys[head], "u_length": lengths[member], "v_length": lengths[head]},
                schema=EDGE_SCHEMA,
            )
            writer.write(edges, (fmix64(u.copy()) % np.uint64(pairs)).astype(np.int64))
            del table, band_hash, keys, lengths, member, head, u, edges  # one partition in memory at a time
        writer.close()
        stats = StageStats()
        stats.extra = {"bucket_pairs": candidates}
        return stats.to_dict()

    # ---- verify (reduce over pair partitions) --------------------------------------------------

    def step_verify(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        stats = StageStats()  # started now: its `seconds` time the step
        mode, threshold = self.params.verify_mode, self.params.verify_at
        edges: list[pa.Table] = []
        candidates = failed = 0
        sample: list[tuple[int, int, int, float]] = []  # (order hash, u, v, similarity)
        cap = -(-REJECTED_SAMPLE // world_size)  # about REJECTED_SAMPLE over all ranks
        for partition in range(rank, self._pair_partitions(ctx), world_size):
            table = ctx.read_partition("pairs", partition, EDGE_SCHEMA, writer="buckets")
            if not table.num_rows:
                continue
            u, v = table.column("u").to_numpy(), table.column("v").to_numpy()
            first = unique_pairs(u, v)
            table, u, v = table.take(pa.array(first)), u[first], v[first]
            candidates += len(u)
            if mode != "none":
                similarity = self.exact_jaccard(ctx, u, v) if mode == "text" else self.estimate(ctx, u, v)
                keep = similarity >= threshold
                failed += int((~keep).sum())
                gone = np.flatnonzero(~keep)
                order = fmix64(u[gone] ^ fmix64(v[gone].copy()))  # a seeded, parallelism-free choice
                for i in np.argsort(order)[:cap].tolist():
                    sample.append((int(order[i]), int(u[gone[i]]), int(v[gone[i]]), float(similarity[gone[i]])))
                sample = sorted(sample)[:cap]
                table = table.filter(pa.array(keep))
            edges.append(table)
        out = pa.concat_tables(edges) if edges else EDGE_SCHEMA.empty_table()
        write_table_atomic(ctx.scratch.join("verify", f"r{rank:05d}.parquet"), out)
        # `candidate_pairs` counts distinct pairs; the bucket step's `bucket_pairs` counts repeats
        # over bands too.
        stats.extra = {"candidate_pairs": candidates}
        if mode != "none":
            stats.extra["pairs_failed_verification"] = failed
            stats.extra["verification"] = {"rejected_sample": {f"r{rank:05d}": self._describe(ctx, sample)}}
            if rank == 0:  # reported once, not added up over ranks
                stats.extra["verification"].update({"mode": mode, "threshold": threshold})
        return stats.to_dict()

    def _describe(self, ctx: StepContext, sample: list[tuple[int, int, int, float]]) -> list[dict[str, Any]]:
        """The rejected pairs of the sample with both documents' ids, the measured similarity and
        (for text verification) the signature estimate."""
        if not sample:
            return []
        u = np.array([s[1] for s in sample], dtype=np.uint64)
        v = np.array([s[2] for s in sample], dtype=np.uint64)
        ids = self._ids_of(ctx, np.concatenate([u, v])).to_pylist()
        estimate = self.estimate(ctx, u, v)
        described = []
        for i, (_, _, _, similarity) in enumerate(sample):
            entry = {"a": ids[i], "b": ids[len(sample) + i], "similarity": round(similarity, 4)}
            if self.params.verify_mode == "text":
                entry["estimate"] = round(float(estimate[i]), 4)
            described.append(entry)
        return described

    # ---- components (global over the edges) ----------------------------------------------------

    def step_components(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        verify_ranks = ctx.peer("verify").world_size
        files = [ctx.scratch.join("verify", f"r{r:05d}.parquet") for r in range(verify_ranks)]
        edges = pa.concat_tables([read_table(f) for f in files])
        u, v = edges.column("u").to_numpy(), edges.column("v").to_numpy()
        stats = StageStats()
        loc = ctx.scratch.join("components", REMOVALS)
        if not len(u):
            write_removals(loc, REMOVALS_SCHEMA.empty_table())
            write_sorted(ctx.scratch.join("components", REQUESTS), REQUESTS_SCHEMA.empty_table(), "owner")
            ctx.scratch.join("components", "names.json").write_json_atomic({"requests": 0})
            return stats.to_dict()
        nodes, roots = connected_components(u, v)
        lengths = None
        if self.params.keep == "longest":
            lengths = np.zeros(len(nodes), dtype=np.int64)
            lengths[np.searchsorted(nodes, u)] = edges.column("u_length").to_numpy()
            lengths[np.searchsorted(nodes, v)] = edges.column("v_length").to_numpy()
        keepers = survivors(nodes, roots, lengths)
        removed = nodes != keepers
        key, survivor, root = nodes[removed], keepers[removed], roots[removed]
        write_removals(loc, pa.table({"key": pa.array(key, pa.uint64()), "survivor": pa.array(survivor, pa.uint64()),
                                      "root": pa.array(root, pa.uint64())}, schema=REMOVALS_SCHEMA))
        # The ids of survivors and first members are looked up by the `names` map, each by the
        # rank whose shard holds it: this step keeps only keys (edges-sized), never ids.
        requests = pa.table({"owner": pa.array(np.concatenate([survivor, root]), pa.uint64()),
                             "consumer": pa.array(np.concatenate([key, key]), pa.uint64()),
                             "kind": pa.array(np.repeat(np.array([KIND_DUP_OF, KIND_GROUP], np.uint8), len(key)))},
                            schema=REQUESTS_SCHEMA)
        write_sorted(ctx.scratch.join("components", REQUESTS), requests, "owner")
        ctx.scratch.join("components", "names.json").write_json_atomic({"requests": requests.num_rows})
        _, sizes = np.unique(roots, return_counts=True)
        stats.extra = {"cluster_sizes": size_histogram(sizes), "clusters": int(len(sizes))}
        return stats.to_dict()

    def _ids_of(self, ctx: StepContext, keys: np.ndarray) -> pa.Array:
        """Document ids of a few `keys` (the report's sample), reading the `id` column of their shards."""
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

    # ---- names (map): the ids of survivors and first members, by the shard that holds them ------

    def _names_layout(self, ctx: StepContext) -> tuple[int, int, int]:
        """(filter ranks W, partitions per filter rank k, shards per filter rank at most): the names
        step's partitions follow the filter's ranks, so a filter rank reads only its own partitions,
        each once, and one partition holds at most PARTITION_ROWS["names"] rows."""
        world = ctx.peer("filter").world_size
        marker = ctx.scratch.join("components", "names.json")
        rows = int(marker.read_json()["requests"]) if marker.exists() else 0
        per_rank = -(-partition_count(rows, PARTITION_ROWS["names"], world) // world)
        shards = ctx.input.corpus.num_shards if ctx.input else 0
        return world, per_rank, max(1, -(-shards // world))

    def _names_partition(self, shard: np.ndarray, layout: tuple[int, int, int]) -> np.ndarray:
        """Partition of each consumer shard: filter rank `shard % W` owns partitions
        [r*k, r*k + k), in the order it visits its shards."""
        world, k, per_rank = layout
        shard = shard.astype(np.int64)
        return (shard % world) * k + (shard // world) * k // per_rank

    def step_names(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        requests_loc = ctx.scratch.join("components", REQUESTS)
        layout = self._names_layout(ctx)
        writer = PartitionWriter(ctx, "names", rank, layout[0] * layout[1], NAMES_SCHEMA)
        asked = 0
        for shard in ctx.shards_for(rank, world_size):
            wanted = read_key_range(requests_loc, "owner", shard, REQUESTS_SCHEMA)
            if not wanted.num_rows:
                continue
            rows = (wanted.column("owner").to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)
            ids = pc.cast(source.read_shard(shard, columns=[ID]).column(ID), pa.string()).take(pa.array(rows))
            consumer = wanted.column("consumer").to_numpy()
            names = pa.table({"consumer": wanted.column("consumer"), "kind": wanted.column("kind"), "id": ids},
                             schema=NAMES_SCHEMA)
            writer.write(names, self._names_partition(consumer >> np.uint64(32), layout))
            asked += wanted.num_rows
        files = writer.close()
        stats = StageStats()
        stats.extra = {"ids_looked_up": asked, "files": files}
        return stats.to_dict()

    def _names_of(self, ctx: StepContext, partition: int) -> tuple[np.ndarray, np.ndarray, pa.Array]:
        """Every (consumer key, kind, id) of one names partition, sorted by (consumer, kind)."""
        ranks = ctx.peer("names").world_size
        parts = [read_table(f) for f in (ctx.partition_file("names", partition, r) for r in range(ranks))
                 if f.exists()]
        table = pa.concat_tables(parts) if parts else NAMES_SCHEMA.empty_table()
        consumer = table.column("consumer").to_numpy().astype(np.uint64)
        kind = table.column("kind").to_numpy().astype(np.uint64)
        order = np.lexsort((kind, consumer))
        ids = table.column("id").combine_chunks() if table.num_rows else pa.array([], pa.string())
        return consumer[order] * np.uint64(2) + kind[order], consumer[order], ids.take(pa.array(order, pa.int64()))

    # ---- filter (map) --------------------------------------------------------------------------

    def step_filter(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        source = self.require_input(ctx)
        files = [ctx.scratch.join("components", REMOVALS)]
        layout = self._names_layout(ctx)
        cached: dict[int, tuple[np.ndarray, np.ndarray, pa.Array]] = {}

        def names(shard: int, keys: np.ndarray, kind: int) -> pa.Array:
            partition = int(self._names_partition(np.array([shard]), layout)[0])
            if partition not in cached:
                cached.clear()  # a rank visits its partitions in order: one is held at a time
                cached[partition] = self._names_of(ctx, partition)
            packed, _, ids = cached[partition]
            want = keys.astype(np.uint64) * np.uint64(2) + np.uint64(kind)
            at = np.searchsorted(packed, want)
            found = (at < len(packed)) & (packed[np.minimum(at, max(len(packed) - 1, 0))] == want) if len(packed) \
                else np.zeros(len(want), bool)
            if not found.all():
                raise StepError(f"minhash-dedup: {int((~found).sum())} removed document(s) of shard {shard} have no "
                                "looked-up id (the names step's files are incomplete); rerun the stage")
            return ids.take(pa.array(at, pa.int64()))

        def split(shard: int) -> dict[str, Any]:
            removed = read_removals(files, shard, REMOVALS_SCHEMA)
            keys = removed.column("key").to_numpy()
            survivor = removed.column("survivor").to_numpy()
            estimate = self.estimate(ctx, keys, survivor)
            similarity = self.exact_jaccard(ctx, keys, survivor) if self.params.verify_mode == "text" else estimate
            dup_of = names(shard, keys, KIND_DUP_OF) if removed.num_rows else pa.array([], pa.string())
            group = names(shard, keys, KIND_GROUP) if removed.num_rows else pa.array([], pa.string())
            evidence = {DUP_OF: dup_of, SIMILARITY: pa.array(similarity, pa.float64()),
                        SIMILARITY_ESTIMATE: pa.array(estimate, pa.float64()), DUP_GROUP: group}
            return write_evidence_split(self, ctx, shard, source.read_shard(shard, []), removal_rows(removed),
                                        REASON, evidence)

        return self.map_shards(ctx, rank, world_size, split).to_dict()
