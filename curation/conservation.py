"""The conservation invariant: every input id ends up exactly once in the output or in `rejected/`.

Synthetic rows (from rephrasing) are the one exception: they carry `synthetic_source_id`,
which must name an input document.

The check is exact and distributed: ingest hashes every input id into id partitions, publishing
hashes every published id into the same partitions, and each partition is checked on its own
(ids compared by 128-bit hash *and* string, so a hash collision can never hide a problem).
Memory is one partition, whatever the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.errors import ConservationError

PUBLISHED_SCHEMA = pa.schema([("h_hi", pa.uint64()), ("h_lo", pa.uint64()), ("id", pa.string()), ("kind", pa.int8())])


class Kind(IntEnum):
    INPUT = 0
    OUTPUT = 1
    REJECTED = 2
    SYNTHETIC_OUTPUT = 3  # id column holds the synthetic row's source id
    SYNTHETIC_REJECTED = 4


@dataclass(frozen=True)
class ConservationReport:
    input_docs: int
    output_docs: int
    rejected_docs: int
    synthetic_docs: int

    def to_dict(self) -> dict[str, int | bool]:
        return {
            "holds": True,
            "input_docs": self.input_docs,
            "output_docs": self.output_docs,
            "rejected_docs": self.rejected_docs,
            "synthetic_docs": self.synthetic_docs,
        }


def _sample(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_partition(inputs: pa.Table, published: pa.Table) -> dict[str, int]:
    """Check one id partition exactly; raise ConservationError naming the ids that break the rule.

    `inputs` has columns h_hi, h_lo, id (one row per input document); `published` has h_hi, h_lo,
    id, kind (one row per published row; synthetic rows carry their source id)."""
    rows = pa.concat_tables([
        inputs.select(["h_hi", "h_lo", "id"]).append_column(
            "kind", pa.array(np.zeros(inputs.num_rows, np.int8), pa.int8())),
        published.select(["h_hi", "h_lo", "id", "kind"]).cast(PUBLISHED_SCHEMA),
    ])
    counts = {"input_docs": 0, "output_docs": 0, "rejected_docs": 0, "synthetic_docs": 0, "synthetic_rejected": 0}
    if rows.num_rows == 0:
        return counts
    order = pc.sort_indices(rows, [("h_hi", "ascending"), ("h_lo", "ascending"), ("id", "ascending")])
    rows = rows.take(order)
    hi, lo = rows.column("h_hi").to_numpy(), rows.column("h_lo").to_numpy()
    ids = rows.column("id").combine_chunks()
    kind = rows.column("kind").to_numpy().astype(np.int64)
    start = np.ones(len(kind), dtype=bool)
    if len(kind) > 1:
        same_hash = (hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])
        same = np.zeros(len(kind) - 1, dtype=bool)
        if same_hash.any():
            at = np.flatnonzero(same_hash)
            same[at] = pc.equal(ids.take(pa.array(at + 1)), ids.take(pa.array(at))).to_numpy(zero_copy_only=False)
        start[1:] = ~same
    group = np.cumsum(start) - 1
    groups = int(group[-1]) + 1
    per = np.zeros((groups, len(Kind)), dtype=np.int64)
    np.add.at(per, (group, kind), 1)
    first = np.flatnonzero(start)

    def names(mask: np.ndarray) -> list[str]:
        return [str(v) for v in ids.take(pa.array(first[np.flatnonzero(mask)][:6])).to_pylist()]

    n_in, n_out, n_rej = per[:, Kind.INPUT], per[:, Kind.OUTPUT], per[:, Kind.REJECTED]
    n_syn = per[:, Kind.SYNTHETIC_OUTPUT] + per[:, Kind.SYNTHETIC_REJECTED]
    problems: list[str] = []
    checks = [
        (n_in > 1, "input ids repeated: {}"),
        (n_out > 1, "ids written to the output more than once: {}"),
        (n_rej > 1, "ids rejected more than once: {}"),
        ((n_out > 0) & (n_rej > 0), "ids both kept and rejected: {}"),
        ((n_in > 0) & (n_out + n_rej == 0), "{n} input ids are in neither output nor rejected: {}"),
        ((n_in == 0) & (n_out + n_rej > 0), "{n} ids appear that were not in the input: {}"),
        ((n_in == 0) & (n_syn > 0), "synthetic rows point to unknown sources: {}"),
    ]
    for mask, message in checks:
        if mask.any():
            problems.append(message.replace("{n}", str(int(mask.sum()))).format(_sample(names(mask))))
    if problems:
        raise ConservationError("conservation check failed: " + "; ".join(problems))
    counts["input_docs"] = int((n_in > 0).sum())
    counts["output_docs"] = int(n_out.sum())
    counts["rejected_docs"] = int(n_rej.sum())
    counts["synthetic_docs"] = int(per[:, Kind.SYNTHETIC_OUTPUT].sum())
    counts["synthetic_rejected"] = int(per[:, Kind.SYNTHETIC_REJECTED].sum())
    return counts


def _id_rows(values: list[str], kind: Kind) -> pa.Table:
    from curation.stages.ingest import id_hashes

    hi, lo, strings = id_hashes(pa.array(values, pa.string()))
    return pa.table({"h_hi": hi, "h_lo": lo, "id": strings,
                     "kind": pa.array(np.full(len(values), int(kind), np.int8))}, schema=PUBLISHED_SCHEMA)


def check_conservation(
    input_ids: list[str],
    output_ids: list[str],
    rejected_ids: list[str],
    synthetic_sources: list[str] | None = None,
) -> ConservationReport:
    """The whole check on in-memory lists (one partition): for tests and small tools.

    `output_ids` are the real (non-synthetic) output rows; `synthetic_sources` the source ids of
    synthetic rows, which must all be input ids."""
    published = pa.concat_tables([
        _id_rows(output_ids, Kind.OUTPUT),
        _id_rows(rejected_ids, Kind.REJECTED),
        _id_rows(list(synthetic_sources or []), Kind.SYNTHETIC_OUTPUT),
    ])
    counts = check_partition(_id_rows(input_ids, Kind.INPUT), published)
    return ConservationReport(counts["input_docs"], counts["output_docs"], counts["rejected_docs"],
                              counts["synthetic_docs"])
