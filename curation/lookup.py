"""Find a few documents by id in a published dataset without loading it.

Each Parquet file is read one row group at a time: row groups whose id statistics exclude every
wanted id are skipped, the id column of the others is read and compared, and the requested
columns (the text, typically) are read only from row groups that hold a wanted id. So looking up
a handful of documents reads the id column at most, never every text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dataset import Location


def _typed(values: Iterable[Any], type_: pa.DataType) -> pa.Array | None:
    try:
        return pa.array([str(v) for v in values]).cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _may_hold(stats: Any, wanted: pa.Array) -> bool:
    """Whether a row group's min/max statistics allow one of the wanted values."""
    if stats is None or not stats.has_min_max:
        return True
    try:
        lo, hi = pa.scalar(stats.min, wanted.type), pa.scalar(stats.max, wanted.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
        return True
    inside = pc.and_(pc.greater_equal(wanted, lo), pc.less_equal(wanted, hi))
    return bool(pc.any(inside).as_py())


def find_documents(loc: Location, names: Sequence[str], field: str, values: Iterable[Any],
                   columns: Sequence[str] | None = None, limit: int | None = None) -> pa.Table:
    """Rows of the files `names` under `loc` whose `field` is one of `values` (compared in the
    column's type), with `columns` (default: all) and `field`; at most `limit` rows."""
    values = list(values)
    parts: list[pa.Table] = []
    found = 0
    for name in names:
        if limit is not None and found >= limit:
            break
        file = pq.ParquetFile(loc.join(name).path, filesystem=loc.fs)
        schema = file.schema_arrow
        if field not in schema.names:
            continue
        wanted = _typed(values, schema.field(field).type)
        if wanted is None:
            continue
        index = schema.names.index(field)
        column_index = file.schema.names.index(field) if field in file.schema.names else None
        keep = list(schema.names) if columns is None else [c for c in dict.fromkeys([field, *columns])
                                                           if c in schema.names]
        for g in range(file.num_row_groups):
            if column_index is not None:
                stats = file.metadata.row_group(g).column(column_index).statistics
                if not _may_hold(stats, wanted):
                    continue
            ids = file.read_row_group(g, columns=[schema.names[index]]).column(0)
            mask = pc.is_in(ids, value_set=wanted)
            if not pc.any(mask).as_py():
                continue
            rows = file.read_row_group(g, columns=keep).filter(mask)
            parts.append(rows)
            found += rows.num_rows
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive")
