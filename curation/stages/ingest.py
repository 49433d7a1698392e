"""Ingest: stream the user's files into canonical shards, check them, give every document an id.

    read  (map over input files)   each file is streamed (Parquet row groups, JSON lines, gzip or
                                   zstd compressed or not) and cut into canonical shards of about
                                   `input.shardTextBytes` of text: Parquet read in place (runs of
                                   whole row groups; only ids, sizes, rejects written), the rest copied
    index (global)                 the shard list in input order, row counts, one schema check
                                   across all files, the emptiness check
    ids   (map over shards)        every id hashed (128-bit) into id partitions
    check (reduce per partition)   no id repeats anywhere in the input (both files named)

Canonical shard i holds `id`, `text`, the user's other columns, `_bytes` (text bytes) and
`_reject` (ingest's own decision: `invalid-text` for null or non-UTF-8 text under `skipInvalid`);
for a shard read in place its file holds only `id`, `_bytes` and `_reject`, and `Corpus.read`
takes the other columns from the input's row groups.
The input is only read. Shard boundaries depend on the input alone, never on the parallelism.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import xxhash

from curation import storage
from curation.corpus import (
    BYTES,
    INGEST_REASON,
    PARTITION_ROWS,
    RESERVED_COLUMNS,
    Corpus,
    partition_count,
    text_lengths,
)
from curation.dataset import ID, READ_BUFFER, READS, TEXT, Location, column_bytes, commit_staged, staging_path
from curation.errors import InputDataError, SpecError
from curation.layout import RunLayout
from curation.spec import InputSpec, PipelineSpec
from curation.stages.base import PartitionWriter, Stage, StageStats, StepContext, doc_keys
from curation.stages.minhash_math import utf8_buffer

INVALID_TEXT = "invalid-text"
SIDE_COLUMNS = (ID, BYTES, INGEST_REASON)  # an in-place shard's own file: the text stays in the input
IN_PLACE_ROW_GROUP_LIMIT = 2  # x input.shardTextBytes: larger row groups are copied (in_place_file)
BATCH_ROWS = 4096  # rows decoded at once: bounded memory whatever the file size
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd", ".ndjson", ".ndjson.gz", ".ndjson.zst")
ID_SCHEMA = pa.schema([("h_hi", pa.uint64()), ("h_lo", pa.uint64()), ("id", pa.string()), ("key", pa.uint64())])


def input_location(spec: PipelineSpec) -> Location:
    return Location.of(spec.input.path)


def list_input_files(spec: PipelineSpec) -> list[Location]:
    """Sorted input files; a path naming one file is a one-file dataset."""
    return scan_input(spec)[0]


def scan_input(spec: PipelineSpec) -> tuple[list[Location], list[str]]:
    """(input files, names skipped because a path component starts with `_` or `.`)."""
    loc = input_location(spec)
    suffixes = (".parquet",) if spec.input.format == "parquet" else JSONL_SUFFIXES
    if not loc.exists():
        if storage.is_uri(spec.input.path):
            bucket = loc.path.split("/", 1)[0]
            raise InputDataError(
                f"input.path {spec.input.path}: no object under this prefix in bucket '{bucket}' at "
                f"{storage.endpoint_name()}; check the prefix (listing it with `aws s3 ls` shows what is there)")
        raise InputDataError(f"input.path {spec.input.path}: no such file or folder")
    if not loc.is_dir():
        return [loc], []
    every = loc.list(recursive=True, hidden=True)
    names = [n for n in every if n.endswith(suffixes)]
    skipped = [n for n in names if any(p.startswith((".", "_")) for p in n.split("/"))]
    names = [n for n in names if n not in skipped]
    if not names:
        raise InputDataError(
            f"input.path {spec.input.path}: no {' / '.join('*' + s for s in suffixes[:3])} files found "
            f"(is input.format right?){_skipped_note(skipped)}"
        )
    files = [loc.join(n) for n in names]
    _refuse_aliases(files)
    return files, skipped


def _skipped_note(skipped: list[str]) -> str:
    if not skipped:
        return ""
    return f"; {len(skipped)} file(s) skipped because a path component starts with '_' or '.' (e.g. {skipped[0]})"


def _refuse_aliases(files: list[Location]) -> None:
    """Two names for one file (symlinks) would ingest its documents twice."""
    seen: dict[str, str] = {}
    for f in files:
        if f.fs.type_name != "local":
            return
        real = os.path.realpath(f.path)
        if real in seen:
            raise InputDataError(
                f"input files {seen[real]} and {f.path} are the same file ({real}); "
                "remove the link so every document is read once"
            )
        seen[real] = f.path


def count_input_rows(spec: PipelineSpec) -> int:
    """Rows over all input files: Parquet footers only (cheap); JSON lines are streamed."""
    total = 0
    for f in list_input_files(spec):
        if spec.input.format == "parquet":
            total += _parquet_file(f).metadata.num_rows
        else:
            total += sum(b.num_rows for b in _jsonl_batches(f))
    return total


def require_documents(spec: PipelineSpec) -> int:
    """The number of input documents; an empty input is an error (preflight and validate)."""
    rows = count_input_rows(spec)
    if rows == 0:
        raise InputDataError(f"input.path {spec.input.path}: the dataset is empty (0 documents)")
    return rows


def _unreadable(f: Location, err: Exception, what: str = "Parquet file") -> InputDataError:
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return InputDataError(f"{f.path}: not a readable {what} ({msg}); replace or remove it and rerun")


def _parquet_file(f: Location) -> pq.ParquetFile:
    try:  # large coalesced ranges: few requests on an object store (dataset.READ_BUFFER)
        return pq.ParquetFile(f.path, filesystem=f.fs, pre_buffer=True, buffer_size=READ_BUFFER)
    except (pa.ArrowInvalid, OSError) as err:
        raise _unreadable(f, err) from None


def _jsonl_batches(f: Location) -> Iterator[pa.RecordBatch]:
    try:
        with f.fs.open_input_stream(f.path) as stream:  # compression detected from the extension
            reader = pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=8 << 20))
            yield from reader
    except (pa.ArrowInvalid, OSError) as err:
        raise _unreadable(f, err, "JSON lines file") from None


def input_batches(spec: PipelineSpec, f: Location) -> Iterator[pa.Table]:
    """A file's rows in batches of bounded size."""
    if spec.input.format == "parquet":
        pf = _parquet_file(f)
        READS.objects += 1
        try:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as err:
            raise _unreadable(f, err) from None
        READS.bytes += column_bytes(pf.metadata)
    else:
        READS.objects += 1
        READS.bytes += f.fs.get_file_info(f.path).size or 0
        for batch in _jsonl_batches(f):
            table = pa.Table.from_batches([batch])
            for start in range(0, table.num_rows, BATCH_ROWS):
                yield table.slice(start, BATCH_ROWS)


def derived_id_stem(root: Location, f: Location) -> str:
    rel = f.path[len(root.path.rstrip("/")) + 1 :] if f.path != root.path else f.path.rsplit("/", 1)[-1]
    for suffix in (".gz", ".zst", ".zstd"):
        rel = rel.removesuffix(suffix)
    return rel.rsplit(".", 1)[0]


def text_problems(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, list[int]]:
    """Return the text as a UTF-8 string array and the rows that are null or not valid UTF-8."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        return _decode_rows(arr.to_pylist())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(str(arr.type))
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:  # rare: invalid UTF-8 inside a string column; find the rows one by one
        return _decode_rows(arr.cast(pa.large_binary()).to_pylist())
    bad = np.flatnonzero(pc.is_null(arr).to_numpy(zero_copy_only=False)).tolist() if arr.null_count else []
    return arr.cast(pa.string()), bad


def _decode_rows(raw_values: list[bytes | None]) -> tuple[pa.Array, list[int]]:
    values: list[str | None] = []
    bad: list[int] = []
    for i, raw in enumerate(raw_values):
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(None)
        if values[-1] is None:
            bad.append(i)
    return pa.array(values, pa.string()), bad


def check_columns(spec: InputSpec, names: list[str], f: Location) -> None:
    """The columns a file must have, and the names Thresher keeps for itself."""
    if spec.text_field not in names:
        raise InputDataError(
            f"{f.path}: no text column '{spec.text_field}' (columns: {', '.join(names) or 'none'}); "
            "set input.textField"
        )
    if spec.id_field is not None and spec.id_field not in names:
        raise InputDataError(
            f"{f.path}: no id column '{spec.id_field}' (columns: {', '.join(names)}); "
            "set input.idField, or leave it unset to derive ids"
        )
    if ID in names and spec.id_field is None:
        raise SpecError(
            f"{f.path}: the input has a column '{ID}' but input.idField is not set; set `idField: {ID}` "
            "to use it as the document id, or rename the column (Thresher derives ids into 'id')"
        )
    for canonical, fld in ((TEXT, spec.text_field), (ID, spec.id_field)):
        if canonical in names and fld not in (None, canonical):
            raise SpecError(
                f"{f.path}: column '{canonical}' exists but input names '{fld}' for it; "
                f"rename one of them (Thresher uses '{canonical}' internally)"
            )
    check_source_column(spec, names, f)
    for name in names:
        if name in RESERVED_COLUMNS and name not in (spec.text_field, spec.id_field):
            raise InputDataError(
                f"{f.path}: column '{name}' is reserved for Thresher's own annotations "
                f"(reserved: {', '.join(RESERVED_COLUMNS)}); rename it in the input"
            )


def check_source_column(spec: InputSpec, names: list[str], f: Location) -> None:
    """`sourceField` names an input column, unless ingest derives it from the path (then it must not)."""
    column = spec.source_column
    if column is None:
        return
    if spec.source_from_path is None and column not in names:
        raise InputDataError(
            f"{f.path}: no source column '{column}' (columns: {', '.join(names)}); set input.sourceField "
            "to the column naming each document's source, or derive it with input.sourceFromPath"
        )
    if spec.source_from_path is not None and column in names:
        raise InputDataError(
            f"{f.path}: the input already has a column '{column}', which input.sourceFromPath would "
            "overwrite; set input.sourceField to a new column name"
        )


def path_source(spec: InputSpec, root: Location, f: Location) -> str | None:
    """The source of every document of file `f`, from its path by `sourceFromPath` (None: unset)."""
    if spec.source_from_path is None:
        return None
    import re

    rel = f.path[len(root.path.rstrip("/")) + 1 :] if f.path != root.path else f.path.rsplit("/", 1)[-1]
    match = re.search(spec.source_from_path, rel)
    if match is None:
        raise InputDataError(
            f"{f.path}: its path {rel!r} does not match input.sourceFromPath {spec.source_from_path!r}; "
            "every input file needs a source"
        )
    value = match.group(1) if match.re.groups else match.group(0)
    if not value:
        raise InputDataError(f"{f.path}: input.sourceFromPath {spec.source_from_path!r} gives an empty source")
    return str(value)


def id_array(spec: InputSpec, table: pa.Table, f: Location, stem: str, first_row: int) -> pa.Array:
    """The batch's ids in the user's type (string or integer), or derived `<stem>:<row>` strings."""
    if spec.id_field is None:
        return pa.array([f"{stem}:{first_row + i}" for i in range(table.num_rows)], pa.string())
    ids = table.column(spec.id_field).combine_chunks()
    if ids.null_count:
        raise InputDataError(f"{f.path}: id column '{spec.id_field}' has {ids.null_count} null values")
    if pa.types.is_large_string(ids.type) or pa.types.is_string_view(ids.type):
        return ids.cast(pa.string())
    if pa.types.is_string(ids.type) or pa.types.is_integer(ids.type):
        return ids
    raise InputDataError(
        f"{f.path}: id column '{spec.id_field}' has type {ids.type}; ids must be strings or integers "
        "(a float or nested id cannot be compared exactly)"
    )


def normalise_batch(
    spec: PipelineSpec, table: pa.Table, f: Location, stem: str, first_row: int, source: str | None = None
) -> pa.Table:
    """Canonical `id`, `text` first, the user's other columns, then `_bytes` and `_reject`."""
    inp = spec.input
    check_columns(inp, table.column_names, f)
    try:
        text, bad = text_problems(table.column(inp.text_field))
    except TypeError as err:
        raise InputDataError(f"{f.path}: text column '{inp.text_field}' has type {err}, expected string") from None
    ids = id_array(inp, table, f, stem, first_row)
    if bad and not inp.skip_invalid:
        raise InputDataError(
            f"{f.path}: {len(bad)} document(s) with null or non-UTF-8 text "
            f"(first: row {first_row + bad[0]}, id {ids[bad[0]].as_py()}); fix them or set input.skipInvalid: true"
        )
    reject = np.full(table.num_rows, None, dtype=object)
    reject[bad] = INVALID_TEXT
    out = pa.table({ID: ids, TEXT: text})
    for c in table.column_names:
        if c not in (inp.text_field, inp.id_field):
            col = table.column(c)
            out = out.append_column(c, col.cast(pa.string()) if pa.types.is_large_string(col.type) else col)
    if source is not None and inp.source_column is not None:  # derived from the file's path
        out = out.append_column(inp.source_column, pa.array([source] * table.num_rows, pa.string()))
    out = out.append_column(BYTES, pa.array(text_lengths(text), pa.int64()))
    return out.append_column(INGEST_REASON, pa.array(reject, pa.string()))


class _PartWriter:
    """Canonical shards of one input file: a new part whenever the text reaches the target size.

    With `auto_cut` off the caller ends each part (`finish_part`): in-place shards end at row-group
    boundaries and hold only `SIDE_COLUMNS`."""

    def __init__(self, corpus: Location, file_index: int, target_bytes: int, auto_cut: bool = True) -> None:
        self.corpus, self.file_index, self.target, self.auto_cut = corpus, file_index, target_bytes, auto_cut
        self.parts: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.tmp = ""
        self.sink: Any = None
        self.rows = self.bytes = self.first_row = 0

    def name(self) -> str:
        return f"f{self.file_index:05d}-{len(self.parts):04d}.parquet"

    def write(self, table: pa.Table, f: Location) -> None:
        """Append rows; a part closes at the row where its text reaches the target size."""
        sizes = np.cumsum(table.column(BYTES).to_numpy())
        start = 0
        while start < table.num_rows:
            base = int(sizes[start - 1]) if start else 0
            cut = int(np.searchsorted(sizes, base + self.target - self.bytes, side="left")) + 1
            end = min(max(cut, start + 1), table.num_rows)
            self._append(table.slice(start, end - start), f)
            start = end

    def _append(self, table: pa.Table, f: Location) -> None:
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            table = _conform(table, self.schema, f)
        if self.writer is None:
            self.tmp = staging_path(self.corpus.join(self.name()))
            self.sink = self.corpus.fs.open_output_stream(self.tmp)
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.bytes += int(pc.sum(table.column(BYTES)).as_py() or 0)
        if self.auto_cut and self.bytes >= self.target:
            self.finish_part()

    def finish_part(self, **extra: Any) -> None:
        if self.writer is None:
            return
        self.writer.close()  # the footer; the stream it was given stays open until closed here
        self.sink.close()  # on an object store: completes the upload
        name = self.name()
        commit_staged(self.corpus.join(name), self.tmp)
        self.parts.append({"name": name, "rows": self.rows, "bytes": self.bytes, "first_row": self.first_row,
                           **extra})
        self.first_row += self.rows
        self.writer, self.rows, self.bytes = None, 0, 0


def _text_leaf(pf: pq.ParquetFile, name: str) -> int | None:
    meta = pf.metadata
    return next((i for i in range(meta.num_columns) if meta.schema.column(i).path == name), None)


def in_place_file(spec: PipelineSpec, f: Location) -> pq.ParquetFile | None:
    """The open Parquet file when it is read in place (`input.readInPlace`), None when it is copied.

    In place needs row groups of bounded text: a stage reads whole row groups, so one holding more
    than IN_PLACE_ROW_GROUP_LIMIT x `shardTextBytes` of text (a file written as one huge row
    group) is copied into canonical shards of the target size instead."""
    if spec.input.format != "parquet" or not spec.input.read_in_place:
        return None
    pf = _parquet_file(f)
    leaf = _text_leaf(pf, spec.input.text_field)
    if leaf is None:
        return None  # no text column: normalise_batch names the problem
    meta = pf.metadata
    limit = IN_PLACE_ROW_GROUP_LIMIT * spec.input.shard_text_bytes
    if any(meta.row_group(g).column(leaf).total_uncompressed_size > limit for g in range(meta.num_row_groups)):
        return None
    return pf


def file_identity(f: Location) -> dict[str, int]:
    """Size and modification time: what a stage compares before it reads a file in place."""
    info = f.fs.get_file_info(f.path)
    mtime = info.mtime_ns if info.mtime_ns is not None else -1
    return {"size": int(info.size or 0), "mtime_ns": int(mtime)}


def encode_schema(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def _conform(table: pa.Table, schema: pa.Schema, f: Location) -> pa.Table:
    if table.schema.names != schema.names:
        raise InputDataError(
            f"{f.path}: columns change inside the file ({', '.join(schema.names)} then "
            f"{', '.join(table.schema.names)}); write every row with the same columns"
        )
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        diff = next(n for n in schema.names if table.schema.field(n).type != schema.field(n).type)
        raise InputDataError(
            f"{f.path}: column '{diff}' changes type inside the file ({schema.field(diff).type} then "
            f"{table.schema.field(diff).type})"
        ) from None


def schema_fields(schema: pa.Schema) -> list[list[str]]:
    return [[fld.name, str(fld.type)] for fld in schema if fld.name not in (BYTES, INGEST_REASON)]


class IngestStage(Stage):
    type_name = "ingest"
    steps = ("read", "index", "ids", "check")

    def _corpus(self) -> Location:
        return RunLayout.of(self.spec.output.path).corpus.loc

    def _file_manifest(self, index: int) -> Location:
        return self._corpus().join("_files", f"f{index:05d}.json")

    def step_read(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        files = list_input_files(self.spec)
        root = input_location(self.spec)
        corpus = self._corpus()

        def read_file(index: int) -> dict[str, Any]:
            f = files[index]
            stem = derived_id_stem(root, f)
            source = path_source(self.spec.input, root, f)
            identity = file_identity(f)
            pf = in_place_file(self.spec, f)
            parts = _PartWriter(corpus, index, self.spec.input.shard_text_bytes, auto_cut=pf is None)
            stats = StageStats()
            rows = 0
            canonical: pa.Schema | None = None

            def take(batch: pa.Table) -> int:
                nonlocal rows, canonical
                table = normalise_batch(self.spec, batch, f, stem, rows, source)
                canonical = canonical or table.schema
                rows += table.num_rows
                if table.num_rows:
                    parts.write(table, f) if pf is None else parts._append(table.select(SIDE_COLUMNS), f)
                rejected = pc.drop_null(table.column(INGEST_REASON)).to_pylist()
                stats.removed.update(rejected)
                stats.docs_in += table.num_rows
                stats.docs_out += table.num_rows - len(rejected)
                stats.bytes_in += int(pc.sum(table.column(BYTES)).as_py() or 0)
                return len(rejected)

            if pf is None:
                for batch in input_batches(self.spec, f):
                    take(batch)
                parts.finish_part()
            else:  # in place: shards are runs of whole row groups; only ids, sizes and rejects are written
                READS.objects += 1
                first, bad, groups = 0, 0, pf.metadata.num_row_groups
                try:
                    for g in range(groups):
                        for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g]):
                            bad += take(pa.Table.from_batches([batch]))
                        if parts.bytes >= parts.target or g == groups - 1:
                            parts.finish_part(row_groups=[first, g + 1], clean=bad == 0)
                            first, bad = g + 1, 0
                except (pa.ArrowInvalid, OSError) as err:
                    raise _unreadable(f, err) from None
                READS.bytes += column_bytes(pf.metadata)
                if file_identity(f) != identity:
                    raise InputDataError(f"{f.path}: changed while ingest read it; rerun when the input is final")
            stats.bytes_out = stats.bytes_in
            self._file_manifest(index).write_json_atomic({
                "path": f.path, "uri": storage.uri_of(f), "rows": rows, "parts": parts.parts,
                "in_place": pf is not None, **identity, "source": source,
                "schema": schema_fields(canonical) if canonical is not None and rows else None,
                "canonical_schema": encode_schema(canonical) if canonical is not None and rows else None,
            })
            return stats.to_dict()

        total = self.map_shards(ctx, rank, world_size, read_file)
        if rank == 0:  # extras add up across ranks in the summary: count the files once
            total.extra = {"files": len(files)}
        return total.to_dict()

    def step_index(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        files = list_input_files(self.spec)
        shards: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        reference: tuple[str, list[list[str]]] | None = None
        canonical: str | None = None
        for i in range(len(files)):
            manifest = self._file_manifest(i).read_json()
            entries.append({k: manifest.get(k) for k in ("path", "uri", "rows", "in_place", "size", "mtime_ns",
                                                         "source")})
            if manifest["schema"] is not None:
                if reference is None:
                    reference = (manifest["path"], manifest["schema"])
                    canonical = manifest.get("canonical_schema")
                else:
                    _compare_schemas(reference, (manifest["path"], manifest["schema"]))
            for part in manifest["parts"]:
                shards.append({**part, "file": i})
        rows = sum(s["rows"] for s in shards)
        if rows == 0:
            raise InputDataError(f"input.path {self.spec.input.path}: the dataset is empty (0 documents)")
        index = {"shards": shards, "files": entries, "rows": rows,
                 "text_bytes": sum(s["bytes"] for s in shards),
                 "schema": reference[1] if reference else [], "canonical_schema": canonical,
                 "text_field": self.spec.input.text_field, "source_column": self.spec.input.source_column}
        self._corpus().join(Corpus.INDEX).write_json_atomic(index)
        stats = StageStats()
        stats.extra = {"shards": len(shards)}
        return stats.to_dict()

    def id_partitions(self, ctx: StepContext) -> int:
        return partition_count(RunLayout.of(self.spec.output.path).corpus.rows, PARTITION_ROWS["ids"],
                               ctx.peer("check").world_size)

    def step_ids(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        corpus = RunLayout.of(self.spec.output.path).corpus
        count = self.id_partitions(ctx)
        writer = PartitionWriter(ctx, "ids", rank, count, ID_SCHEMA)
        for shard in ctx.shards_for(rank, world_size):
            ids = corpus.read(shard, [ID]).column(ID)
            rows = id_rows(ids, doc_keys(shard, len(ids)))
            writer.write(rows, (rows.column("h_lo").to_numpy() % np.uint64(count)).astype(np.int64))
        writer.close()
        return StageStats().to_dict()

    def step_check(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        corpus = RunLayout.of(self.spec.output.path).corpus
        for p in range(rank, self.id_partitions(ctx), world_size):
            table = ctx.read_partition("ids", p, ID_SCHEMA)
            first, second = repeated_ids(table)
            if len(first):
                keys = table.column("key").to_numpy()
                a, b = int(keys[first[0]]), int(keys[second[0]])
                raise InputDataError(
                    f"id {table.column('id')[int(first[0])].as_py()!r} appears twice: in "
                    f"{_where(corpus, a)} and in {_where(corpus, b)}"
                    f"{f' (and {len(first) - 1} more repeated ids)' if len(first) > 1 else ''}; "
                    "ids must be unique across all input files"
                )
            del table, first, second  # before the next partition is read: one in memory at a time
        return StageStats().to_dict()


def _where(corpus: Corpus, key: int) -> str:
    shard, row = key >> 32, key & 0xFFFFFFFF
    entry = corpus.index["shards"][shard]
    return f"{corpus.source_of(shard, row)} (row {entry['first_row'] + row})"


def _compare_schemas(a: tuple[str, list[list[str]]], b: tuple[str, list[list[str]]]) -> None:
    types_a, types_b = dict(map(tuple, a[1])), dict(map(tuple, b[1]))  # type: ignore[arg-type]
    if list(types_a) != list(types_b):
        raise InputDataError(
            f"{b[0]}: columns {', '.join(types_b)} differ from {a[0]} ({', '.join(types_a)}); "
            "all input files must have the same columns"
        )
    for name, type_a in types_a.items():
        if types_b[name] != type_a and "null" not in (type_a, types_b[name]):
            raise InputDataError(
                f"{b[0]}: column '{name}' has type {types_b[name]} but {type_a} in {a[0]}; "
                "all input files must have the same column types"
            )


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(high, low) halves of the 128-bit xxh3 of each id's string form, and the strings."""
    strings = pc.cast(ids, pa.string())
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks() if strings.num_chunks else pa.array([], pa.string())
    if len(strings) == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), strings
    values, offsets = utf8_buffer(strings)
    view, bounds, digest = memoryview(values), offsets.tolist(), xxhash.xxh3_128_digest
    raw = b"".join([digest(view[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)])
    halves = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    return halves[:, 0].copy(), halves[:, 1].copy(), strings


def id_rows(ids: pa.Array | pa.ChunkedArray, keys: np.ndarray) -> pa.Table:
    hi, lo, strings = id_hashes(ids)
    return pa.table({"h_hi": hi, "h_lo": lo, "id": strings, "key": pa.array(keys, pa.uint64())}, schema=ID_SCHEMA)


def repeated_ids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (first, repeat) of equal ids in a table of id rows (exact: hash and string)."""
    if table.num_rows < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = pc.sort_indices(table, [("h_hi", "ascending"), ("h_lo", "ascending"), ("id", "ascending")])
    order_np = order.to_numpy()
    t = table.take(order)
    hi, lo = t.column("h_hi").to_numpy(), t.column("h_lo").to_numpy()
    ids = t.column("id").combine_chunks()
    same = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
    if not same.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx = np.flatnonzero(same)
    equal = pc.equal(ids.take(pa.array(idx + 1)), ids.take(pa.array(idx))).to_numpy(zero_copy_only=False)
    idx = idx[equal]
    return order_np[idx], order_np[idx + 1]
