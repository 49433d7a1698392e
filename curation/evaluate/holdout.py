"""`thresher holdout`: split a dataset into train/ and heldout/ before curation, leak-free.

Assignment is by a keyed hash of the document id (BLAKE2b of `<seed>:<id>`), so a rerun, another
machine, or a grown dataset put every document on the same side. Duplicates are the trap: a
near copy of a held-out document left in train/ would let the proxy model memorise the
evaluation set. So after the split every train document is checked against the held-out
documents' word n-grams (the same check `thresher eval` refuses on), and one that shares any
is moved to `overlap/` with the held-out id it overlaps (`overlaps_heldout`): written, counted,
never silently dropped. Every input row lands in exactly one of the three folders; the input is
never modified. Both passes stream the input (only the held-out n-gram hashes are in memory).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import InputDataError, SpecError
from curation.evaluate.data import parquet_files
from curation.evaluate.overlap import NgramIndex

TRAIN, HELDOUT, OVERLAP = "train", "heldout", "overlap"
OVERLAP_COLUMN = "overlaps_heldout"
ROWS_PER_SHARD = 50_000


def heldout_by_id(ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """True where the id's keyed hash falls below `fraction` (stable across runs and machines)."""
    limit = int(fraction * (1 << 64))
    salt = f"{seed}:".encode()
    return np.array([int.from_bytes(hashlib.blake2b(salt + i.encode(), digest_size=8).digest(), "big") < limit
                     for i in ids], dtype=bool)


@dataclass
class HoldoutResult:
    out: Path
    documents: int
    train: int
    heldout: int
    overlap: int
    example: str

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "documents": self.documents, "train": self.train, "heldout": self.heldout,
                "overlap_moved": self.overlap, "overlap_example": self.example}


class _ShardWriter:
    def __init__(self, folder: Path) -> None:
        self.folder, self.index, self.rows, self.total = folder, 0, 0, 0
        self.writer: pq.ParquetWriter | None = None
        folder.mkdir(parents=True)

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self.writer is not None and self.rows >= ROWS_PER_SHARD:
            self.close()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.folder / f"part-{self.index:05d}.parquet", table.schema,
                                           compression="zstd")
            self.index, self.rows = self.index + 1, 0
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.total += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> int:
        self.close()
        return self.total


def _ids(table: pa.Table, id_field: str | None, file: Path, start: int) -> list[str]:
    if id_field:
        return [str(v) for v in table.column(id_field).to_pylist()]
    return [f"{file.name}:{start + i}" for i in range(table.num_rows)]


def _prepare(input_path: str, out: Path, fraction: float, force: bool) -> list[Path]:
    if not 0 < fraction < 1:
        raise SpecError(f"--fraction {fraction}: give a fraction between 0 and 1 (e.g. 0.1)")
    src = Path(input_path).resolve()
    if out.resolve() == src or src in out.resolve().parents:
        raise SpecError(f"{out}: the split is written next to the input, never inside it; choose another folder")
    files = parquet_files(input_path)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SpecError(f"{out} exists and is not empty; pass --force to replace it")
        for name in (TRAIN, HELDOUT, OVERLAP, "holdout.json"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return files


def _batches(files: list[Path], text_field: str, id_field: str | None) -> Iterator[tuple[pa.Table, list[str]]]:
    """(rows, their ids) of every file in order; checks the columns first."""
    for f in files:
        names = pq.ParquetFile(f).schema_arrow.names
        for needed in filter(None, (text_field, id_field)):
            if needed not in names:
                raise InputDataError(f"{f}: no column {needed!r} (columns: {', '.join(names)})")
    for f in files:
        start = 0
        for batch in pq.ParquetFile(f).iter_batches(batch_size=8192):
            table = pa.Table.from_batches([batch])
            yield table, _ids(table, id_field, f, start)
            start += table.num_rows


def split_holdout(input_path: str, out: str | Path, fraction: float = 0.1, seed: int = 0,
                  text_field: str = "text", id_field: str | None = None, ngram: int = 13,
                  min_matches: int = 1, force: bool = False) -> HoldoutResult:
    out = Path(out)
    files = _prepare(input_path, out, fraction, force)
    if id_field is None:
        print("warning: no --id-field; ids are <file>:<row>, stable only while the files are", file=sys.stderr)

    held = _ShardWriter(out / HELDOUT)
    triples: list[tuple[str, str, str]] = []
    for table, ids in _batches(files, text_field, id_field):  # pass 1: the held-out side, and its n-grams
        mask = heldout_by_id(ids, fraction, seed)
        held.write(table.filter(pa.array(mask)))
        texts = table.column(text_field).to_pylist()
        triples.extend((i, i, t or "") for i, t, m in zip(ids, texts, mask, strict=True) if m)
    index = NgramIndex.build(triples, ngram)
    del triples

    train, overlap = _ShardWriter(out / TRAIN), _ShardWriter(out / OVERLAP)
    documents, example = 0, ""
    for table, ids in _batches(files, text_field, id_field):  # pass 2: train, minus what overlaps
        documents += table.num_rows
        keep = ~heldout_by_id(ids, fraction, seed)
        rest = table.filter(pa.array(keep))
        rest_ids = [i for i, k in zip(ids, keep, strict=True) if k]
        counts, partner = index.matches([t or "" for t in rest.column(text_field).to_pylist()], min_matches)
        bad = counts >= min_matches
        train.write(rest.filter(pa.array(~bad)))
        if bad.any():
            moved = rest.filter(pa.array(bad))
            overlap.write(moved.append_column(
                OVERLAP_COLUMN, pa.array([index.labels[p] for p in partner[bad]], pa.string())))
            j = int(np.flatnonzero(bad)[0])
            example = example or f"{rest_ids[j]} shares {counts[j]} {ngram}-gram(s) with held-out {index.labels[partner[j]]}"
    result = HoldoutResult(out, documents, train.finish(), held.finish(), overlap.finish(), example)
    if not result.heldout:
        raise InputDataError(f"{input_path}: no document fell in the held-out {fraction:.0%}; raise --fraction")
    (out / "holdout.json").write_text(json.dumps({
        **result.to_dict(), "input": str(input_path), "fraction": fraction, "seed": seed, "id_field": id_field,
        "text_field": text_field, "ngram": ngram, "min_matches": min_matches,
        "assignment": "blake2b-64(f'{seed}:{id}') < fraction * 2^64",
    }, indent=2))
    return result


def count_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet")))

