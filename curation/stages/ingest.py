"""Ingest: read the user's files, check them, give every document a stable id, normalise columns.

Input file i (sorted by path) becomes shard i of the pipeline. The input is only read.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from curation.dataset import ID, TEXT, Location, read_table
from curation.errors import InputDataError, SpecError
from curation.spec import InputSpec, PipelineSpec
from curation.stages.base import Stage, StepContext

INVALID_TEXT = "invalid-text"


def input_location(spec: PipelineSpec) -> Location:
    return Location.of(spec.input.path)


def list_input_files(spec: PipelineSpec) -> list[Location]:
    """Sorted input files; a path naming one file is a one-shard dataset."""
    loc = input_location(spec)
    suffix = ".parquet" if spec.input.format == "parquet" else ".jsonl"
    if not loc.exists():
        raise InputDataError(f"input.path {spec.input.path}: no such file or folder")
    if not loc.is_dir():
        return [loc]
    names = loc.list(suffix, recursive=True)
    if not names:
        raise InputDataError(
            f"input.path {spec.input.path}: no *{suffix} files found (is input.format right?)"
        )
    return [loc.join(n) for n in names]


def count_input_rows(spec: PipelineSpec) -> int:
    """Rows over all input files from Parquet footers only (cheap); JSONL files are read."""
    total = 0
    for f in list_input_files(spec):
        if spec.input.format == "parquet":
            try:
                total += pq.ParquetFile(f.path, filesystem=f.fs).metadata.num_rows
            except (pa.ArrowInvalid, OSError) as err:
                raise InputDataError(
                    f"{f.path}: not a readable Parquet file ({str(err).splitlines()[0]}); "
                    "replace or remove it and rerun"
                ) from None
        else:
            total += _read_jsonl(f).num_rows
    return total


def require_documents(spec: PipelineSpec) -> int:
    """The number of input documents; an empty input is an error (preflight and ingest rank 0)."""
    rows = count_input_rows(spec)
    if rows == 0:
        raise InputDataError(f"input.path {spec.input.path}: the dataset is empty (0 documents)")
    return rows


def _read_jsonl(f: Location) -> pa.Table:
    try:
        with f.fs.open_input_stream(f.path) as stream:
            return pajson.read_json(stream)
    except pa.ArrowInvalid as err:
        raise InputDataError(f"{f.path}: not valid JSON lines ({str(err).splitlines()[0]})") from None


def read_input_file(spec: PipelineSpec, f: Location) -> pa.Table:
    return read_table(f) if spec.input.format == "parquet" else _read_jsonl(f)


def derived_ids(root: Location, f: Location, n: int) -> pa.Array:
    rel = f.path[len(root.path.rstrip("/")) + 1 :] if f.path != root.path else f.path.rsplit("/", 1)[-1]
    stem = rel.rsplit(".", 1)[0]
    return pa.array([f"{stem}:{i}" for i in range(n)], pa.string())


def text_problems(column: pa.ChunkedArray) -> tuple[pa.Array, list[int]]:
    """Return the text as a UTF-8 string array and the rows that are null or not valid UTF-8."""
    arr = column.combine_chunks()
    bad: list[int] = []
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        values: list[str | None] = []
        for i, raw in enumerate(arr.to_pylist()):
            if raw is None:
                bad.append(i)
                values.append(None)
                continue
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                bad.append(i)
                values.append(None)
        return pa.array(values, pa.string()), bad
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(str(arr.type))
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        # Rare: invalid UTF-8 inside a string column. Find the rows one by one.
        values = []
        for i, raw in enumerate(arr.cast(pa.large_binary()).to_pylist()):
            try:
                values.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(None)
            if values[-1] is None:
                bad.append(i)
        return pa.array(values, pa.string()), bad
    nulls = pc.is_null(arr)
    if arr.null_count:
        bad = [i for i, v in enumerate(nulls.to_pylist()) if v]
    return arr.cast(pa.string()), bad


def normalise_table(spec: InputSpec, table: pa.Table, f: Location, root: Location) -> tuple[pa.Table, list[int]]:
    """Canonical `id` and `text` columns first, other columns kept; returns bad-text rows."""
    cols = table.column_names
    if spec.text_field not in cols:
        raise InputDataError(
            f"{f.path}: no text column '{spec.text_field}' (columns: {', '.join(cols) or 'none'}); "
            "set input.textField"
        )
    if spec.id_field is not None and spec.id_field not in cols:
        raise InputDataError(
            f"{f.path}: no id column '{spec.id_field}' (columns: {', '.join(cols)}); "
            "set input.idField, or leave it unset to derive ids"
        )
    for canonical, field in ((TEXT, spec.text_field), (ID, spec.id_field)):
        if canonical in cols and field != canonical:
            raise SpecError(
                f"{f.path}: column '{canonical}' exists but input names '{field}' for it; "
                f"rename one of them (Thresher uses '{canonical}' internally)"
            )
    try:
        text, bad = text_problems(table.column(spec.text_field))
    except TypeError as err:
        raise InputDataError(f"{f.path}: text column '{spec.text_field}' has type {err}, expected string") from None
    if spec.id_field is not None:
        ids_col = table.column(spec.id_field)
        if ids_col.null_count:
            raise InputDataError(f"{f.path}: id column '{spec.id_field}' has {ids_col.null_count} null values")
        ids = ids_col.cast(pa.string()).combine_chunks()
        if pc.count_distinct(ids).as_py() != len(ids):
            raise InputDataError(f"{f.path}: id column '{spec.id_field}' has repeated values; ids must be unique")
    else:
        ids = derived_ids(root, f, table.num_rows)
    rest = [c for c in cols if c not in (spec.text_field, spec.id_field)]
    out = pa.table({ID: ids, TEXT: text})
    for c in rest:
        out = out.append_column(c, table.column(c))
    return out, bad


class IngestStage(Stage):
    type_name = "ingest"
    steps = ("read",)

    def step_read(self, ctx: StepContext, rank: int, world_size: int) -> dict[str, Any]:
        files = list_input_files(self.spec)
        root = input_location(self.spec)
        if rank == 0:
            require_documents(self.spec)

        def read_file(shard: int) -> dict[str, Any]:
            f = files[shard]
            table, bad = normalise_table(self.spec.input, read_input_file(self.spec, f), f, root)
            if bad and not self.spec.input.skip_invalid:
                ids = table.column(ID).to_pylist()
                raise InputDataError(
                    f"{f.path}: {len(bad)} document(s) with null or non-UTF-8 text "
                    f"(first: row {bad[0]}, id {ids[bad[0]]}); fix them or set input.skipInvalid: true"
                )
            bad_set = set(bad)
            reasons = [INVALID_TEXT if i in bad_set else None for i in range(table.num_rows)]
            return self.write_split(ctx, shard, table, reasons)

        total = self.map_shards(ctx, rank, world_size, read_file)
        if rank == 0:  # extras add up across ranks in the summary: count the files once
            total.extra = {"files": len(files)}
        return total.to_dict()
