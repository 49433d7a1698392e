"""Datasets: folders of Parquet shards plus `_manifest.json`, written atomically.

All file access goes through pyarrow's filesystem layer (`resolve`), so a local path and an
S3-compatible URI (`s3://bucket/prefix`) are handled by the same code.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation import storage
from curation.errors import InputDataError, StepError

ID = "id"
TEXT = "text"
STAGE = "stage"
REASON = "reason"
SYNTHETIC_SOURCE = "synthetic_source_id"
MANIFEST = "_manifest.json"
SHARD_FMT = "part-{:05d}.parquet"
COMPRESSION = "zstd"
TMP_PREFIX = ".tmp-"  # files being written; renamed into place when complete


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a local path or an `s3://bucket/prefix` URI."""
    return storage.resolve(path)


@dataclass(frozen=True)
class Location:
    """A folder on some filesystem; joins stay on the same filesystem."""

    fs: pafs.FileSystem
    path: str

    @classmethod
    def of(cls, path: str) -> Location:
        fs, inner = resolve(path)
        return cls(fs, inner)

    def join(self, *parts: str) -> Location:
        return Location(self.fs, "/".join([self.path.rstrip("/"), *parts]))

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def list(self, suffix: str = "", recursive: bool = False, hidden: bool = False) -> list[str]:
        """Sorted names (relative paths when recursive) of files ending with suffix; names with a
        component starting with `_` or `.` are skipped unless `hidden`."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=recursive))
        out = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(self.path.rstrip("/")) + 1 :]
            if not hidden and any(part.startswith((".", "_")) for part in rel.split("/")):
                continue
            if rel.endswith(suffix):
                out.append(rel)
        return sorted(out)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return bytes(f.read())

    def read_json(self) -> Any:
        return json.loads(self.read_bytes().decode("utf-8"))

    def write_bytes_atomic(self, data: bytes) -> None:
        """Write to a temporary sibling, then rename: readers never see a half-written file."""
        if storage.is_object_store(self.fs):  # a PUT is atomic; a "rename" would be a copy
            with _object_errors(self.path), self.fs.open_output_stream(self.path) as f:
                f.write(data)
            return
        parent = self.path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = temporary_name(self.path)
        with _removed_on_failure(self.fs, tmp, self.path):
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, self.path)

    def write_json_atomic(self, obj: Any) -> None:
        self.write_bytes_atomic(json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))

    def delete_dir(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)


def shard_name(index: int) -> str:
    return SHARD_FMT.format(index)


def shard_index(name: str) -> int:
    return int(name.rsplit("/", 1)[-1].split("-")[1].split(".")[0])


def write_table_atomic(loc: Location, table: pa.Table) -> int:
    """Write a Parquet file atomically; returns its size in bytes."""
    if storage.is_object_store(loc.fs):  # one upload under the final name: visible whole or not at all
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=COMPRESSION)
        data = sink.getvalue()
        with _object_errors(loc.path), loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
        return int(data.size)
    parent = loc.path.rsplit("/", 1)[0]
    loc.fs.create_dir(parent, recursive=True)
    tmp = temporary_name(loc.path)
    with _removed_on_failure(loc.fs, tmp, loc.path):
        pq.write_table(table, tmp, filesystem=loc.fs, compression=COMPRESSION)
        loc.fs.move(tmp, loc.path)
    return int(loc.fs.get_file_info(loc.path).size or 0)


def staging_path(loc: Location) -> str:
    """Where a streamed file is written before `commit_staged`: a temporary sibling on a
    filesystem (renamed into place), the final name itself on an object store (an upload
    becomes visible only when it completes)."""
    if storage.is_object_store(loc.fs):
        return loc.path
    loc.fs.create_dir(loc.path.rsplit("/", 1)[0], recursive=True)
    return temporary_name(loc.path)


def commit_staged(loc: Location, staged: str) -> None:
    """Put a file written at `staging_path(loc)` in place (nothing to do on an object store)."""
    if staged != loc.path:
        loc.fs.move(staged, loc.path)


def temporary_name(path: str) -> str:
    """The sibling a file is written to before it is renamed into place."""
    parent, name = path.rsplit("/", 1)
    return f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex}-{name}"


@contextlib.contextmanager
def _object_errors(path: str) -> Iterator[None]:
    """An object-store failure while writing `path` becomes one actionable line."""
    try:
        yield
    except OSError as err:
        raise storage.StorageError(storage.describe(err, path)) from None


@contextlib.contextmanager
def _removed_on_failure(fs: pafs.FileSystem, tmp: str, final: str) -> Iterator[None]:
    """A failed write leaves no temporary file (on a full disk it holds the space a rerun needs);
    an OSError without a file name gets the name of the file being written."""
    try:
        yield
    except OSError as err:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, os.strerror(err.errno), final) from err
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise


@dataclass
class ReadCounter:
    """Parquet files opened and column bytes read by this process (a rank's step stats)."""

    objects: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"objects_read": self.objects, "bytes_read": self.bytes}


READS = ReadCounter()
READ_BUFFER = 8 << 20  # read-ahead per column stream: large ranges, few requests on an object store


def column_bytes(meta: pq.FileMetaData, row_groups: Iterable[int] | None = None,
                 columns: Iterable[str] | None = None) -> int:
    """Compressed bytes of the column chunks a read fetches (`ReadCounter.bytes`): the given row
    groups (None: all) and top-level columns (None: all)."""
    wanted = None if columns is None else set(columns)
    groups = range(meta.num_row_groups) if row_groups is None else row_groups
    return sum(int(rg.column(c).total_compressed_size) for rg in (meta.row_group(g) for g in groups)
               for c in range(rg.num_columns)
               if wanted is None or rg.column(c).path_in_schema.split(".", 1)[0] in wanted)


@contextlib.contextmanager
def parquet_errors(loc: Location, name: str | None = None, hint: str = "; replace or remove it and rerun",
                   missing_is_step_error: bool = True) -> Iterator[None]:
    """A failed Parquet read as one error naming the file (`name`, default its path): a missing
    intermediate is a StepError (the step before did not finish), a store's refusal a
    StorageError, anything else an unreadable file (InputDataError)."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        if missing_is_step_error and isinstance(err, FileNotFoundError):
            raise StepError(f"{loc.path}: missing (did the previous step finish?)") from None
        if storage.is_object_store(loc.fs) and not isinstance(err, pa.ArrowInvalid):
            raise storage.StorageError(storage.describe(err, loc.path)) from None
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputDataError(f"{name or loc.path}: not a readable Parquet file ({msg}){hint}") from None


def read_table(loc: Location, columns: list[str] | None = None, rows: np.ndarray | None = None) -> pa.Table:
    """Read a Parquet file; corrupt or truncated files raise InputDataError naming the file.
    `rows`: a bool per row of the file, only those rows are returned (None: all).

    The footer is read with one ranged request; the column chunks wanted are fetched in coalesced
    ranges (`pre_buffer`), never the whole object to get at its footer."""
    with parquet_errors(loc), loc.fs.open_input_file(loc.path) as f:
        pf = pq.ParquetFile(f, pre_buffer=True, buffer_size=READ_BUFFER)
        table = read_parquet(pf, None, columns, rows)
        READS.objects += 1
        READS.bytes += column_bytes(pf.metadata, None, columns)
        return table


def iter_row_groups(loc: Location, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """A Parquet file one row group at a time: memory bounded by the writer's row-group size."""
    with parquet_errors(loc), loc.fs.open_input_file(loc.path) as f:
        pf = pq.ParquetFile(f, pre_buffer=True, buffer_size=READ_BUFFER)
        READS.objects += 1
        for g in range(pf.metadata.num_row_groups):
            READS.bytes += column_bytes(pf.metadata, [g], columns)
            yield read_parquet(pf, [g], columns)


# ---- reading big column chunks in small batches ------------------------------------------------
#
# `ParquetFile.read_row_groups` decodes a column of all the row groups asked for into one Arrow
# buffer that grows by doubling: a 128 MB text column passes through 64, 128 and 256 MB
# allocations (each fresh memory, page-faulted in, the old contents copied), with the compressed
# column chunks of every row group buffered beside it. `read_parquet` gives the same table (same
# schema, values, order and one chunk per column) from batches of a few MB: each batch's strings
# are copied straight into one buffer sized from the footer, and each row group's compressed
# chunks are freed before the next one's are fetched. About half the peak memory above the table
# itself and less CPU (mostly system time); small reads take the plain path.

STREAM_MIN_BYTES = 16 << 20  # uncompressed column bytes from which a read goes batch by batch
BATCH_BYTES = 4 << 20  # decoded bytes of the biggest column per batch (well below the allocator's huge sizes)
_STRING_TYPES = {pa.string(): np.int32, pa.binary(): np.int32, pa.large_string(): np.int64,
                 pa.large_binary(): np.int64}


class _Strings:
    """A string or binary column built batch by batch in one buffer (a new chunk past the offset range)."""

    max_bytes = 1 << 62  # data bytes per chunk (besides the offsets' range); tests lower it

    def __init__(self, type_: pa.DataType, rows: int, estimate: int) -> None:
        self.type, self.rows = type_, rows
        self.dtype = _STRING_TYPES[type_]
        self.limit = min(int(np.iinfo(self.dtype).max), self.max_bytes)
        self.chunks: list[pa.Array] = []
        self._start(rows, estimate)

    def _start(self, rows: int, estimate: int) -> None:
        self.offsets = np.zeros(rows + 1, dtype=self.dtype)
        self.valid: np.ndarray | None = None
        self.data = pa.allocate_buffer(max(64, min(estimate, self.limit)), resizable=True)
        self.pos = 0
        self.row = 0
        self.left = rows

    def _reserve(self, size: int) -> None:
        need = self.pos + size
        if need > self.data.size:
            self.data.resize(max(need, min(self.limit, 2 * self.data.size)))

    def _finish_chunk(self) -> None:
        n = self.row
        validity = None
        null_count = 0
        if self.valid is not None:
            valid = self.valid[:n]
            null_count = n - int(np.count_nonzero(valid))
            if null_count:
                validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
        offsets = pa.py_buffer(self.offsets[: n + 1])
        self.chunks.append(pa.Array.from_buffers(self.type, n, [validity, offsets, self.data.slice(0, self.pos)],
                                                 null_count=null_count))

    def add(self, array: pa.Array) -> None:
        n = len(array)
        if not n:
            return
        bufs = array.buffers()
        offsets = np.frombuffer(bufs[1], dtype=self.dtype)[array.offset : array.offset + n + 1]
        start, end = int(offsets[0]), int(offsets[-1])
        if self.pos + end - start > self.limit:  # past the offset range: split the batch, or start a chunk
            if n > 1:
                self.add(array.slice(0, n // 2))
                self.add(array.slice(n // 2))
                return
            if self.row:
                self._finish_chunk()
                self._start(self.left, end - start)
        self._reserve(end - start)
        if end > start:
            data = np.frombuffer(self.data, dtype=np.uint8)
            data[self.pos : self.pos + end - start] = np.frombuffer(bufs[2], dtype=np.uint8)[start:end]
            del data  # no view may outlive a resize of the buffer
        self.offsets[self.row + 1 : self.row + n + 1] = offsets[1:] - np.int64(start - self.pos)
        if array.null_count:
            if self.valid is None:
                self.valid = np.ones(len(self.offsets) - 1, dtype=bool)
            self.valid[self.row : self.row + n] = np.asarray(array.is_valid().to_numpy(zero_copy_only=False))
        self.pos += end - start
        self.row += n
        self.left -= n

    def finish(self) -> pa.ChunkedArray | pa.Array:
        self._finish_chunk()
        return self.chunks[0] if len(self.chunks) == 1 else pa.chunked_array(self.chunks, self.type)


def read_parquet(pf: pq.ParquetFile, row_groups: list[int] | None, columns: list[str] | None,
                 rows: np.ndarray | None = None) -> pa.Table:
    """`pf.read_row_groups(row_groups, columns)` (None: every row group, every column), the same
    table; string, binary and fixed-width columns of big reads are decoded in small batches.
    `rows`: a bool per row read, only those rows are returned (`.filter(rows)`, without a copy of
    the whole columns first)."""
    meta = pf.metadata
    groups = list(range(meta.num_row_groups)) if row_groups is None else list(row_groups)
    if any(not 0 <= g < meta.num_row_groups for g in groups):  # Arrow's own error
        return pf.read_row_groups(groups, columns=columns)
    schema = pf.schema_arrow
    names = schema.names if columns is None else list(columns)
    top = [f.name for f in schema]
    leaves: dict[str, list[int]] = {}
    for i in range(meta.num_columns):  # Parquet columns (leaves) of each top-level field
        leaves.setdefault(meta.schema.column(i).path.split(".", 1)[0], []).append(i)
    sizes = {c: [sum(meta.row_group(g).column(i).total_uncompressed_size for i in leaves.get(c, ()))
                 for g in groups] for c in names}
    streamed = [c for c in names if top.count(c) == 1 and (schema.field(c).type in _STRING_TYPES
                                                          or pa.types.is_primitive(schema.field(c).type))]
    counts = [meta.row_group(g).num_rows for g in groups]
    if rows is not None:
        rows = np.asarray(rows, dtype=bool)
        if len(rows) != sum(counts):
            raise ValueError(f"{len(rows)} row flags for {sum(counts)} rows")
        rows = None if rows.all() else rows
    if (len(set(names)) != len(names) or any(c not in top for c in names) or not streamed or not sum(counts)
            or (rows is not None and not rows.any()) or sum(sum(sizes[c]) for c in streamed) < STREAM_MIN_BYTES):
        table = pf.read(columns=columns) if row_groups is None else pf.read_row_groups(groups, columns=columns)
        return table if rows is None else table.filter(pa.array(rows))
    out, batch_schema = _read_batches(pf, groups, counts, {c: sizes[c] for c in streamed}, rows)
    fields = {f.name: f for f in batch_schema}
    rest = [c for c in names if c not in out]
    if rest:
        other = pf.read(columns=rest) if row_groups is None else pf.read_row_groups(groups, columns=rest)
        other = other if rows is None else other.filter(pa.array(rows))
        out.update({c: other.column(c) for c in rest})
        fields.update({f.name: f for f in other.schema})
    return pa.table([out[c] for c in names], schema=pa.schema([fields[c] for c in names], batch_schema.metadata))


def _read_batches(pf: pq.ParquetFile, groups: list[int], counts: list[int], sizes: dict[str, list[int]],
                  rows: np.ndarray | None) -> tuple[dict[str, pa.Array | pa.ChunkedArray], pa.Schema]:
    """The columns `sizes` names (uncompressed bytes per row group) of the row groups, batch by
    batch (one row group's column chunks fetched at a time), each as one array; only the `rows`
    flagged (None: all; at least one)."""
    schema = pf.schema_arrow
    streamed = list(sizes)
    kept = sum(counts) if rows is None else int(np.count_nonzero(rows))
    strings = {c: _Strings(schema.field(c).type, kept, sum(sizes[c]))
               for c in streamed if schema.field(c).type in _STRING_TYPES}
    fixed: dict[str, list[pa.Array]] = {c: [] for c in streamed if c not in strings}
    batch_schema: pa.Schema | None = None
    first = 0  # the batch's first row among the rows of `groups`
    for k, g in enumerate(groups):
        if not counts[k] or (rows is not None and not rows[first : first + counts[k]].any()):
            first += counts[k]
            continue
        widest = max(sizes[c][k] for c in streamed)
        batch_rows = max(1, min(counts[k], BATCH_BYTES * counts[k] // max(1, widest)))
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=streamed):
            batch_schema = batch_schema or batch.schema
            n = batch.num_rows
            if rows is not None and not rows[first : first + n].all():
                batch = batch.filter(pa.array(rows[first : first + n]))
            first += n
            for c in streamed:
                if c in strings:
                    strings[c].add(batch.column(c))
                else:
                    fixed[c].append(batch.column(c))
    assert batch_schema is not None
    out: dict[str, pa.Array | pa.ChunkedArray] = {c: s.finish() for c, s in strings.items()}
    out.update({c: pa.concat_arrays(arrays) for c, arrays in fixed.items()})
    return out, batch_schema


def parquet_schema(loc: Location) -> pa.Schema:
    try:
        return pq.read_schema(loc.path, filesystem=loc.fs)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputDataError(
            f"{loc.path}: not a readable Parquet file ({msg}); replace or remove it and rerun"
        ) from None


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    tables = [t for t in tables]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def with_stage_reason(table: pa.Table, stage: str, reasons: list[str] | pa.Array) -> pa.Table:
    """Rejected rows: the document's columns plus `stage` and `reason`."""
    n = table.num_rows
    for col in (STAGE, REASON):
        if col in table.column_names:
            table = table.drop_columns([col])
    table = table.append_column(STAGE, pa.array([stage] * n, pa.string()))
    return table.append_column(REASON, pa.array(reasons, pa.string()))


class ShardedDataset:
    """A dataset folder: `part-NNNNN.parquet` shards and an optional `_manifest.json`."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc

    @classmethod
    def at(cls, path: str) -> ShardedDataset:
        return cls(Location.of(path))

    def shard_names(self) -> list[str]:
        return [n for n in self.loc.list(".parquet") if n.startswith("part-")]

    def shard(self, index: int) -> Location:
        return self.loc.join(shard_name(index))

    def read_shard(self, index: int, columns: list[str] | None = None) -> pa.Table:
        return read_table(self.shard(index), columns)

    def write_shard(self, index: int, table: pa.Table) -> int:
        return write_table_atomic(self.shard(index), table)

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        return concat(read_table(self.loc.join(n), columns) for n in self.shard_names())

    def write_manifest(self, lineage: dict[str, Any] | None = None, count: int | None = None) -> dict[str, Any]:
        """Write `_manifest.json` for shards 0..count-1 (what the writers committed; each must
        exist), or, without `count`, for the shards a listing finds."""
        shards = []
        schema: pa.Schema | None = None
        names = self.shard_names() if count is None else [shard_name(i) for i in range(count)]
        for name in names:
            meta = pq.ParquetFile(self.loc.join(name).path, filesystem=self.loc.fs).metadata
            size = self.loc.fs.get_file_info(self.loc.join(name).path).size
            shards.append({"name": name, "rows": meta.num_rows, "bytes": int(size or 0)})
            if schema is None:
                schema = meta.schema.to_arrow_schema()
        manifest = {
            "format": "parquet",
            "shards": shards,
            "rows": sum(s["rows"] for s in shards),
            "schema": {f.name: str(f.type) for f in schema} if schema is not None else {},
            "lineage": lineage or {},
        }
        self.loc.join(MANIFEST).write_json_atomic(manifest)
        return manifest


@dataclass(frozen=True)
class RankMarker:
    """Completion marker of one rank of one step: `_done/<step>/rank-i-of-n.json`."""

    root: Location
    step: str

    def _loc(self, rank: int, world_size: int) -> Location:
        return self.root.join("_done", self.step, f"rank-{rank:05d}-of-{world_size:05d}.json")

    def is_done(self, rank: int, world_size: int) -> bool:
        return self._loc(rank, world_size).exists()

    def mark(self, rank: int, world_size: int, stats: dict[str, Any]) -> None:
        self._loc(rank, world_size).write_json_atomic(stats)

    def read(self, rank: int, world_size: int) -> dict[str, Any]:
        data: dict[str, Any] = self._loc(rank, world_size).read_json()
        return data

    def all_done(self, world_size: int) -> bool:
        return all(self.is_done(r, world_size) for r in range(world_size))

    def clear(self) -> None:
        self.root.join("_done", self.step).delete_dir()
