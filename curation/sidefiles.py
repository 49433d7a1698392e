"""Small NumPy side files (`.npy`) written atomically and read back, whole or by rows.

Embeddings, cluster labels, centroids and curriculum boundaries live in these files; reading
selected rows is memory-mapped on local disks and done by byte ranges on object stores.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from curation.dataset import Location
from curation.errors import StepError


def write_npy(loc: Location, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    loc.write_bytes_atomic(buffer.getvalue())


def missing_file(loc: Location) -> StepError:
    return StepError(f"{loc.path}: missing (did the step before finish?)")


def npy_shape(loc: Location) -> tuple[int, ...]:
    """Shape of a .npy file, from its header only."""
    if not loc.exists():
        raise missing_file(loc)
    with loc.fs.open_input_file(loc.path) as f:
        shape, _ = _npy_header(f)
    return shape


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """(shape, dtype) of the .npy file open at its start; leaves `f` at the first data byte."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran:
        raise StepError("embedding side file in Fortran order; rerun the embed step")
    return tuple(int(s) for s in shape), dtype


def read_npy(loc: Location, rows: np.ndarray | None = None) -> np.ndarray:
    """Read a .npy side file; `rows` (sorted) reads only those rows: memory-mapped on local disks,
    by byte ranges elsewhere."""
    if not loc.exists():
        raise missing_file(loc)
    if isinstance(loc.fs, pafs.LocalFileSystem):
        data = np.load(loc.path, mmap_mode="r", allow_pickle=False)
        return np.array(data if rows is None else data[rows])
    if rows is None:
        return np.load(io.BytesIO(loc.read_bytes()), allow_pickle=False)
    with loc.fs.open_input_file(loc.path) as f:
        shape, dtype = _npy_header(f)
        offset = f.tell()
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        out = np.empty((len(rows), *shape[1:]), dtype=dtype)
        for lo, hi in coalesced_runs(rows, row_bytes):
            first, last = int(rows[lo]), int(rows[hi - 1])
            raw = f.read_at((last - first + 1) * row_bytes, offset + first * row_bytes)
            block = np.frombuffer(raw, dtype=dtype).reshape(last - first + 1, *shape[1:])
            out[lo:hi] = block[rows[lo:hi] - first]
        return out


HOLE_BYTES = 1 << 20  # a gap this small is read through: one request costs more than 1 MiB of transfer
RANGE_BYTES = 32 << 20  # no single request spans more (bounds the buffer of one read)


def coalesced_runs(rows: np.ndarray, row_bytes: int, hole: int = HOLE_BYTES,
                   span: int = RANGE_BYTES) -> list[tuple[int, int]]:
    """Split sorted `rows` into [lo, hi) runs, one ranged request each: a run continues across gaps
    of at most `hole` bytes and breaks where a `span`-aligned block boundary is crossed (so a request
    reads at most `span` bytes plus one row). Vectorised: rows can be millions of shingle keys."""
    if not len(rows):
        return []
    rows = np.asarray(rows, dtype=np.int64)
    gap = (np.diff(rows) - 1) * row_bytes
    block = rows * row_bytes // max(span, row_bytes)
    breaks = np.flatnonzero((gap > hole) | (np.diff(block) != 0)) + 1
    bounds = np.concatenate([[0], breaks, [len(rows)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


