"""The canonical corpus and the decision files: "annotate, then select" (Dolma's shape).

Ingest cuts the input into canonical shards (`_work/corpus/`): a Parquet file is read in place (a
shard is a run of its row groups, and ingest writes only the shard's ids, text sizes and
rejects), anything else is copied. After that no stage copies documents: a stage writes, per canonical shard, only what it decided about the documents
still alive when it started — a *decision file* with

    _row      the document's row in the shard's universe (canonical rows, then synthetic rows)
    reason    null = kept, else why it was removed
    ...       evidence (`dup_of`, `similarity`, `dup_group`, ...) and annotation columns (`quality_score`, ...)
    text      optional: a modifier stage's new text for the rows it changed

A stage that creates documents (rephrase) also writes a synthetic file per shard: full rows whose
`_row` numbers continue after the universe it saw, judged in the same decision file.

`CorpusView` is what a stage reads: the rows alive at its entry, with the canonical columns and
every earlier annotation joined on, in a stable order (so positions agree between the steps of a
stage). Publishing reads the full universe once more and writes each row to `data/` or
`rejected/`. Memory is one shard at a time everywhere.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation import storage
from curation.dataset import (
    ID,
    READ_BUFFER,
    READS,
    TEXT,
    Location,
    column_bytes,
    parquet_errors,
    read_parquet,
    read_table,
)
from curation.errors import InputDataError, StepError
from curation.memory import release_freed_memory

ROW = "_row"  # row of a document in its shard's universe
BYTES = "_bytes"  # UTF-8 bytes of the document's text (kept beside the text: stats without reading it)
INGEST_REASON = "_reject"  # ingest's decision, stored in the canonical shard itself
REASON = "reason"
STAGE = "stage"
DUP_OF = "dup_of"
SIMILARITY = "similarity"
SIMILARITY_ESTIMATE = "similarity_estimate"
DUP_GROUP = "dup_group"
REDUNDANCY_RANK = "redundancy_rank"
SYNTHETIC_SOURCE = "synthetic_source_id"
# Columns that explain a removal: published on rejected rows only (see docs/dedup-evidence.md).
#   dup_of               id of the kept document the removed one duplicates (in the stage's output)
#   similarity           how similar the two are: exact 1.0; MinHash the exact shingle Jaccard with
#                        `verify: text`, else the signature estimate; semantic and redundancy the cosine
#   similarity_estimate  MinHash only: the signature estimate of the Jaccard (always)
#   dup_group            the duplicate group (the survivor's id; MinHash: the LSH component's first member)
#   redundancy_rank      redundancy control: the document's place in its cluster's keep order
EVIDENCE = (DUP_OF, SIMILARITY, SIMILARITY_ESTIMATE, DUP_GROUP, REDUNDANCY_RANK)
INTERNAL = (ROW, BYTES, INGEST_REASON)
# Columns Thresher writes into `data/` or `rejected/`: an input column with one of these names
# would be overwritten, so ingest refuses it (see docs/architecture.md, "Reserved columns").
RESERVED_COLUMNS = (
    *INTERNAL,
    STAGE,
    REASON,
    *EVIDENCE,
    SYNTHETIC_SOURCE,
    "curriculum_signal",
    "curriculum_position",
)
DECISION_ROW_GROUP = 1 << 17


IN_PLACE_SIDE = (ID, BYTES, INGEST_REASON)  # what ingest writes for a shard read in place


def _read_row_groups(file: dict[str, Any], entry: dict[str, Any], columns: list[str],
                     rows: np.ndarray | None = None) -> pa.Table:
    """Columns of an in-place shard's row groups, after checking that the file is the one ingest read
    (size, modification time, rows in those row groups); `rows`: a bool per row of the shard, only those rows are returned (None: all)."""
    loc = Location.of(str(file.get("uri") or file["path"]))
    try:
        info = loc.fs.get_file_info(loc.path)
    except OSError as err:
        raise InputDataError(storage.describe(err, loc.path)) from None
    mtime = info.mtime_ns if info.mtime_ns is not None else -1
    if info.size is None or info.type.name == "NotFound":
        raise InputDataError(f"{file['path']}: input file missing; this run reads the input in place "
                             "(input.readInPlace): restore it, or rerun with --restart")
    if int(info.size) != int(file["size"]) or int(mtime) != int(file["mtime_ns"]):
        raise InputDataError(
            f"{file['path']}: input file changed since ingest read it (size {file['size']} -> {info.size}, "
            "or its modification time); this run reads the input in place (input.readInPlace): restore "
            "the file, or rerun with --restart")
    first, end = (int(g) for g in entry["row_groups"])
    groups = list(range(first, end))
    with (parquet_errors(loc, file["path"], hint="", missing_is_step_error=False),
          loc.fs.open_input_file(loc.path) as f):
        pf = pq.ParquetFile(f, pre_buffer=True, buffer_size=READ_BUFFER)
        meta = pf.metadata
        if all(0 <= g < meta.num_row_groups for g in groups):  # else Arrow's error
            held = sum(meta.row_group(g).num_rows for g in groups)
            if held != int(entry["rows"]):
                raise InputDataError(f"{file['path']}: row groups {entry['row_groups']} hold {held} rows, ingest "
                                     f"read {entry['rows']}; the input changed: restore it or rerun with --restart")
        # pf.read_row_groups(groups, columns), in small batches (dataset.read_parquet)
        table = read_parquet(pf, groups, columns, rows)
        READS.objects += 1
        READS.bytes += column_bytes(pf.metadata, groups, columns)
        return table


def _canonical_text(column: pa.ChunkedArray, clean: bool) -> pa.ChunkedArray | pa.Array:
    """The text as ingest normalised it: a clean string column as is, else ingest's own repair."""
    if clean and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column.cast(pa.string()) if pa.types.is_large_string(column.type) else column
    from curation.stages.ingest import text_problems

    return text_problems(column)[0]


def partition_count(items: int, budget: int, world_size: int) -> int:
    """How many partitions a reduce over `items` rows needs so one partition holds at most
    `budget` rows (never fewer than the ranks that share the work). The one place this is decided."""
    return max(world_size, math.ceil(items / max(1, budget)), 1)


# Rows per reduce partition for each kind of intermediate: the memory budget of one reduce rank.
# Per-document kinds hold 500k rows (~100-300 MB in a rank): at parallelism 2 a 1M-document corpus
# already fills its partitions, so a rank's memory is the same at 1M and at 1B documents (more
# partitions, not bigger ones). Bands are 14+ rows per document; clusters and embeddings are
# sized by what a k-means cluster or a faiss search holds.
PARTITION_ROWS = {"ids": 500_000, "exact": 500_000, "bands": 3_000_000, "curriculum": 500_000,
                  "embeddings": 500_000, "clusters": 4_000_000, "names": 500_000}


@dataclass
class Corpus:
    """Canonical shards written by ingest, with their index (`_index.json`)."""

    loc: Location
    _index: dict[str, Any] | None = field(default=None, repr=False)

    INDEX = "_index.json"

    @property
    def index(self) -> dict[str, Any]:
        if self._index is None:
            loc = self.loc.join(self.INDEX)
            if not loc.exists():
                raise StepError(f"{loc.path}: missing (did ingest finish?)")
            self._index = loc.read_json()
        return self._index

    @property
    def num_shards(self) -> int:
        return len(self.index["shards"])

    @property
    def rows(self) -> int:
        return int(self.index["rows"])

    def shard_loc(self, shard: int) -> Location:
        return self.loc.join(self.index["shards"][shard]["name"])

    def shard_rows(self, shard: int) -> int:
        return int(self.index["shards"][shard]["rows"])

    def schema(self) -> pa.Schema:
        encoded = self.index.get("canonical_schema")
        if encoded:
            return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))
        return pq.read_schema(self.shard_loc(0).path, filesystem=self.loc.fs)

    def read(self, shard: int, columns: list[str] | None = None, rows: np.ndarray | None = None) -> pa.Table:
        """`columns` (None: all) of a canonical shard; `rows`: a bool per row of the shard, only
        those rows are returned (None: all), as `.filter(rows)` would, without a copy of every row."""
        entry = self.index["shards"][shard]
        if rows is not None and len(rows) != int(entry["rows"]):
            raise ValueError(f"shard {shard}: {len(rows)} row flags for {entry['rows']} rows")
        if "row_groups" not in entry:  # a copy: the canonical shard holds every column
            return read_table(self.shard_loc(shard), columns, rows)
        return self._read_in_place(shard, entry, columns, rows)

    def _read_in_place(self, shard: int, entry: dict[str, Any], columns: list[str] | None,
                       rows: np.ndarray | None = None) -> pa.Table:
        """An in-place shard: ids, sizes and ingest's rejects from its own file, every other column
        from the row groups of the input file (unchanged since ingest: size and modification time)."""
        names = self.schema().names
        wanted = names if columns is None else columns
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise StepError(f"shard {shard}: no column(s) {', '.join(unknown)} in the corpus")
        side_cols = [c for c in wanted if c in IN_PLACE_SIDE]
        file = self.index["files"][entry["file"]]
        source_column = self.index.get("source_column")
        derived = {source_column: file.get("source")} if file.get("source") is not None else {}
        text_field = self.index.get("text_field", TEXT)
        user = [text_field if c == TEXT else c for c in wanted if c not in IN_PLACE_SIDE and c not in derived]
        out: dict[str, pa.ChunkedArray | pa.Array] = {}
        if side_cols or not user:
            side = read_table(self.shard_loc(shard), side_cols or [ID], rows)
            out.update({c: side.column(c) for c in side_cols})
        count = int(entry["rows"]) if rows is None else int(np.count_nonzero(rows))
        if user:
            read = _read_row_groups(file, entry, user, rows)  # checks the row groups hold the shard's rows
            for c in wanted:
                if c == TEXT:
                    out[c] = _canonical_text(read.column(text_field), bool(entry.get("clean")))
                elif c not in out and c not in derived:
                    col = read.column(c)
                    out[c] = col.cast(pa.string()) if pa.types.is_large_string(col.type) else col
        for c, value in derived.items():
            if c in wanted:
                out[c] = pa.array([value] * count, pa.string())
        schema = self.schema()
        return pa.table({c: out[c] for c in wanted}, schema=pa.schema([schema.field(c) for c in wanted]))

    def source_of(self, shard: int, row: int) -> str:
        """The input file a canonical row came from (for messages)."""
        entry = self.index["shards"][shard]
        return str(self.index["files"][entry["file"]]["path"])


@dataclass(frozen=True)
class StageFiles:
    """Decision and synthetic files of one stage (index 1.. in the pipeline)."""

    root: Location  # _work/NN-<stage>

    def decisions(self, shard: int) -> Location:
        return self.root.join("decisions", f"part-{shard:05d}.parquet")

    def synthetic(self, shard: int) -> Location:
        return self.root.join("synthetic", f"part-{shard:05d}.parquet")


def write_parquet(loc: Location, table: pa.Table, metadata: dict[str, str] | None = None) -> int:
    """Write a Parquet file atomically (temporary name, then rename); returns its size."""
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=DECISION_ROW_GROUP)
    data = sink.getvalue().to_pybytes()
    loc.write_bytes_atomic(data)
    return len(data)


def scatter(column: pa.ChunkedArray | pa.Array, rows: np.ndarray, size: int) -> pa.Array:
    """A `size`-long array with `column[i]` at `rows[i]` and null elsewhere."""
    pos = np.full(size, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows), dtype=np.int64)
    indices = pa.array(pos, mask=pos < 0)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return pc.take(column, indices)


@dataclass
class Universe:
    """Every row of one shard known to a stage, with each row's fate up to that stage."""

    table: pa.Table  # ROW, BYTES, canonical columns, annotation columns (latest wins)
    alive: np.ndarray  # bool: still in the corpus
    rejected_at: np.ndarray  # int: stage index that rejected the row (-1: none)
    reason: pa.Array  # string: why (null for alive rows)
    annotation_names: list[str]  # annotation columns in the order stages introduced them


class CorpusView:
    """The documents a stage sees: alive rows after `stages` (earlier stages, in order)."""

    def __init__(self, corpus: Corpus, stages: Sequence[StageFiles]) -> None:
        self.corpus = corpus
        self.stages = list(stages)

    @property
    def num_shards(self) -> int:
        return self.corpus.num_shards

    # -- schemas ---------------------------------------------------------------------------------

    def _decision_schema(self, files: StageFiles, shard: int) -> pa.Schema | None:
        loc = files.decisions(shard)
        if not loc.exists():
            raise StepError(f"{loc.path}: missing (did the stage before finish?)")
        return pq.read_schema(loc.path, filesystem=loc.fs)

    def schema(self, shard: int = 0) -> pa.Schema:
        """Columns a stage can read: canonical ones and every earlier stage's annotations."""
        fields = {f.name: f for f in self.corpus.schema() if f.name not in INTERNAL}
        for files in self.stages:
            dec = self._decision_schema(files, shard)
            for f in dec or []:
                if f.name not in (ROW, REASON, TEXT, BYTES):
                    fields[f.name] = f
            syn = files.synthetic(shard)
            if syn.exists():
                for f in pq.read_schema(syn.path, filesystem=syn.fs):
                    if f.name not in INTERNAL and f.name not in fields:
                        fields[f.name] = f
        return pa.schema(list(fields.values()))

    # -- reading ---------------------------------------------------------------------------------

    def universe(self, shard: int, columns: Iterable[str] | None = None) -> Universe:
        """All rows of a shard with their fate; `columns` limits what is read (None: everything)."""
        return self._universe(shard, columns, alive_only=False)

    def _universe(self, shard: int, columns: Iterable[str] | None, alive_only: bool) -> Universe:
        """`universe`; with `alive_only` its table holds the alive rows alone (`table.filter(alive)`),
        and the canonical columns asked for (the text, ...) are read after the decisions, for the
        canonical rows still alive only: no copy of the whole text to drop the removed rows."""
        release_freed_memory()  # what the previous shard left on the heap
        wanted = None if columns is None else set(columns)
        canon_schema = self.corpus.schema()
        canon_names = canon_schema.names
        base_cols = [c for c in canon_names if c in (BYTES, INGEST_REASON) or wanted is None or c in wanted]
        late = [c for c in base_cols if c not in (BYTES, INGEST_REASON)] if alive_only else []
        base = self.corpus.read(shard, [c for c in base_cols if c not in late] if late else base_cols)
        n = base.num_rows if base.num_columns else self.corpus.shard_rows(shard)
        if late:  # stand-ins (nulls) where the late columns go; they are read at the end
            fields = [base.schema.field(c) if c in base.column_names else canon_schema.field(c) for c in base_cols]
            base = pa.table([base.column(c) if c in base.column_names else pa.nulls(n, f.type)
                             for c, f in zip(base_cols, fields, strict=True)],
                            schema=pa.schema(fields, base.schema.metadata))
        reason0 = base.column(INGEST_REASON) if INGEST_REASON in base.column_names else pa.nulls(n, pa.string())
        parts = [base.drop_columns([c for c in (INGEST_REASON,) if c in base.column_names])]
        parts[0] = parts[0].add_column(0, ROW, pa.array(np.arange(n, dtype=np.int64)))
        alive = np.asarray(pc.is_null(reason0).to_numpy(zero_copy_only=False), dtype=bool).copy()
        rejected_at = np.where(alive, -1, 0).astype(np.int64)
        reasons: list[tuple[np.ndarray, pa.Array]] = [(np.arange(n, dtype=np.int64), pa.array(reason0))]
        scattered: list[tuple[np.ndarray, pa.Table]] = []  # (rows, annotation columns) per stage
        names: list[str] = []
        size = n
        for j, files in enumerate(self.stages, start=1):
            syn_loc = files.synthetic(shard)
            if syn_loc.exists():
                syn = read_table(syn_loc)
                if syn.num_rows:
                    rows = syn.column(ROW).to_numpy()
                    if rows[0] != size or not np.array_equal(rows, np.arange(size, size + len(rows))):
                        raise StepError(f"{syn_loc.path}: synthetic rows out of sequence; rerun that stage")
                    keep = [c for c in syn.column_names if wanted is None or c in wanted or c in (ROW, BYTES)]
                    parts.append(syn.select(keep))
                    alive = np.concatenate([alive, np.ones(len(rows), dtype=bool)])
                    rejected_at = np.concatenate([rejected_at, np.full(len(rows), -1, dtype=np.int64)])
                    size += len(rows)
            dec_loc = files.decisions(shard)
            dec_schema = self._decision_schema(files, shard)
            assert dec_schema is not None
            cols = [c for c in dec_schema.names if c in (ROW, REASON, BYTES) or wanted is None or c in wanted]
            dec = read_table(dec_loc, cols)
            rows = dec.column(ROW).to_numpy().astype(np.int64)
            if len(rows) and (rows.max() >= size or not alive[rows].all()):
                raise StepError(f"{dec_loc.path}: decisions about rows that are not alive; rerun the stage")
            if len(rows) != int(alive.sum()):
                raise StepError(
                    f"{dec_loc.path}: {len(rows)} decisions for {int(alive.sum())} alive documents; rerun the stage"
                )
            reason = dec.column(REASON).combine_chunks() if dec.num_rows else pa.array([], pa.string())
            gone = np.asarray(pc.is_valid(reason).to_numpy(zero_copy_only=False), dtype=bool)
            alive[rows[gone]] = False
            rejected_at[rows[gone]] = j
            reasons.append((rows, reason))
            extra = [c for c in dec.column_names if c not in (ROW, REASON)]
            if extra:
                scattered.append((rows, dec.select(extra)))
                names.extend(c for c in extra if c not in names and c not in (TEXT, BYTES))
        table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        # Annotations: for each column, the latest stage that wrote a value wins.
        by_column: dict[str, list[pa.Array]] = {}
        for rows, ann in scattered:
            for c in ann.column_names:
                by_column.setdefault(c, []).append(scatter(ann.column(c), rows, size))
        for c, arrays in by_column.items():
            merged = arrays[-1] if len(arrays) == 1 else pc.coalesce(*reversed(arrays))
            if c in table.column_names:  # a modifier's text/bytes, or a re-annotated column
                merged = pc.coalesce(merged, table.column(c).combine_chunks().cast(merged.type))
                table = table.set_column(table.column_names.index(c), c, merged)
            else:
                table = table.append_column(c, merged)
        reason_full = pc.coalesce(*[scatter(r, rows, size) for rows, r in reversed(reasons)])
        if alive_only:
            # Nothing removed yet (a first stage, or none of the shard's rows): the table as is, no copy.
            table = table if alive.all() else table.filter(pa.array(alive))
            if late:
                table = self._late_columns(shard, table, late, alive[:n], set(by_column))
        return Universe(table, alive, rejected_at, reason_full, names)

    def _late_columns(self, shard: int, table: pa.Table, late: list[str], canon_alive: np.ndarray,
                      annotated: set[str]) -> pa.Table:
        """The alive rows' table with the stand-ins of `late` replaced: the alive canonical rows read
        now (under an annotation of the same name, e.g. a modifier's text, as the fallback), then the
        synthetic rows' values."""
        k = int(np.count_nonzero(canon_alive))
        canon = self.corpus.read(shard, late, rows=canon_alive)
        for c in late:
            i = table.column_names.index(c)
            col, head = table.column(c), canon.column(c)
            field = canon.schema.field(c)
            if c in annotated or head.type != col.type:
                field = table.schema.field(i)
                head = head.cast(col.type)
                if c in annotated:
                    head = pc.coalesce(col.slice(0, k).combine_chunks(), head.combine_chunks())
            chunks = [*(head.chunks if isinstance(head, pa.ChunkedArray) else [head]),
                      *(x for x in col.slice(k).chunks if len(x))]
            value = pa.chunked_array([x for x in chunks if len(x)] or chunks[:1], field.type)
            table = table.set_column(i, field, value)
        return table

    def read_shard(self, shard: int, columns: list[str] | None = None) -> pa.Table:
        """Alive rows of a shard, in a stable order, with `_row`, `_bytes` and `columns` (None: all)."""
        table = self._universe(shard, columns, alive_only=True).table
        if columns is not None:
            keep = [ROW, BYTES, *[c for c in columns if c not in (ROW, BYTES)]]
            missing = [c for c in keep if c not in table.column_names]
            if missing:
                raise StepError(f"shard {shard}: no column(s) {', '.join(missing)} in the documents")
            table = table.select(keep)
        return table



def decision_table(
    rows: np.ndarray, reasons: Sequence[str | None] | pa.Array, annotations: dict[str, pa.Array] | None = None
) -> pa.Table:
    """A decision file's table, sorted by row."""
    order = np.argsort(rows, kind="stable")
    reason = reasons if isinstance(reasons, pa.Array) else pa.array(list(reasons), pa.string())
    idx = pa.array(order, pa.int64())
    cols: dict[str, Any] = {ROW: pa.array(rows[order], pa.int64()), REASON: pc.take(reason.cast(pa.string()), idx)}
    for name, values in (annotations or {}).items():
        cols[name] = pc.take(values, idx)
    return pa.table(cols)


def text_lengths(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """UTF-8 byte length of each text (0 for null)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    return np.asarray(pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
