"""Removal lists, shared by the four dedup stages: who goes, and the evidence of why.

A reduce (or global) step writes the removed documents' keys (`doc_keys`: shard << 32 | position
among the shard's alive documents) with their evidence columns, sorted by key in small row groups;
the stage's filter step (a map over shards) reads only its shard's key range from every file and
records the decision with the evidence (`dup_of`, `similarity`, `dup_group`, ...; see
`curation.corpus.EVIDENCE` and docs/dedup-evidence.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.corpus import scatter
from curation.dataset import Location
from curation.errors import InputDataError, StepError
from curation.stages.base import Stage, StepContext

KEY = "key"
REMOVALS_ROW_GROUP = 1 << 16  # small row groups: a filter rank reads only its shard's key range


def write_sorted(loc: Location, table: pa.Table, column: str = KEY) -> int:
    """Write rows sorted by a uint64 key `column`, in small row groups, atomically: a reader of one
    shard's key range reads only the row groups that hold it."""
    table = table.take(pc.sort_indices(table, [(column, "ascending")]))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=REMOVALS_ROW_GROUP)
    loc.write_bytes_atomic(sink.getvalue().to_pybytes())
    return table.num_rows


def write_removals(loc: Location, table: pa.Table) -> int:
    """Write removal rows (a `key` column and evidence) sorted by key, in small row groups, atomically."""
    return write_sorted(loc, table, KEY)


def read_key_range(loc: Location, column: str, shard: int, schema: pa.Schema) -> pa.Table:
    """Rows of a file written by `write_sorted` whose `column` key is in `shard` (row groups pruned)."""
    lo, hi = shard << 32, (shard + 1) << 32
    expr = (pc.field(column) >= pa.scalar(lo, pa.uint64())) & (pc.field(column) < pa.scalar(hi, pa.uint64()))
    if not loc.exists():
        raise StepError(f"{loc.path}: missing (did the step before finish?)")
    try:
        return pq.read_table(loc.path, filesystem=loc.fs, filters=expr).cast(schema)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputDataError(f"{loc.path}: not a readable Parquet file ({err}); rerun the stage") from None


def read_removals(locs: list[Location], shard: int, schema: pa.Schema) -> pa.Table:
    """Rows of removal files whose key is in `shard` (row groups pruned by key)."""
    tables = [read_key_range(loc, KEY, shard, schema) for loc in locs]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def removal_rows(removed: pa.Table) -> np.ndarray:
    """Row (position among the shard's alive documents) of each removal."""
    return (removed.column(KEY).to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)


def write_evidence_split(
    stage: Stage,
    ctx: StepContext,
    shard: int,
    table: pa.Table,
    rows: np.ndarray,
    reason: str,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    """Record one shard's decisions: `reason` at `rows` (positions in `table`, the shard's alive
    documents), kept elsewhere; each evidence column (values for `rows`, in their order) is null on
    kept rows. `table` may carry annotations of its own (e.g. a cluster column for every row)."""
    n = table.num_rows
    if len(rows) and (rows.max() >= n or len(np.unique(rows)) != len(rows)):
        raise StepError(f"{ctx.step.id}: removal list does not match shard {shard} ({n} rows); rerun the stage")
    reasons = np.full(n, None, dtype=object)
    reasons[rows] = reason
    for name, values in evidence.items():
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        table = table.append_column(name, scatter(array, rows, n))
    return stage.write_split(ctx, shard, table, reasons.tolist())
