"""Side files read by rows through byte ranges (the object-store path): few, bounded requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

from curation.dataset import Location
from curation.sidefiles import coalesced_runs, read_npy, write_npy


def test_close_rows_share_one_request_and_far_ones_do_not() -> None:
    rows = np.array([0, 1, 2, 10, 11, 5000, 5001, 900_000])
    # 16-byte rows: gaps of 7 and 4988 rows are 112 B and ~80 KB (read through); 894,998 rows is 14 MB
    assert coalesced_runs(rows, 16) == [(0, 7), (7, 8)]
    assert coalesced_runs(rows, 16, hole=0) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    assert coalesced_runs(np.array([], np.int64), 16) == []


def test_no_request_spans_more_than_the_range_limit() -> None:
    rows = np.arange(0, 100_000, 3)
    runs = coalesced_runs(rows, 64, span=1 << 20)
    assert runs[0][0] == 0 and runs[-1][1] == len(rows)
    assert all(a == b for (_, a), (b, _) in zip(runs[:-1], runs[1:], strict=True))  # contiguous cover
    assert max((rows[hi - 1] - rows[lo] + 1) * 64 for lo, hi in runs) <= (1 << 20) + 64
    assert len(runs) == -(-100_000 * 64 // (1 << 20))  # one per 1 MiB block touched




def test_rows_read_by_ranges_equal_the_memory_mapped_rows(tmp_path: Path) -> None:
    data = np.arange(200_000 * 4, dtype=np.uint32).reshape(200_000, 4)
    write_npy(Location(pafs.LocalFileSystem(), str(tmp_path / "sig.npy")), data)
    rows = np.unique(np.random.default_rng(0).integers(0, len(data), 5000))
    # a SubTreeFileSystem is not a LocalFileSystem: read_npy takes the byte-range path
    ranged = Location(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "sig.npy")
    assert np.array_equal(read_npy(ranged, rows), data[rows])
    assert np.array_equal(read_npy(ranged, rows[:1]), data[rows[:1]])
    assert read_npy(ranged, rows[:0]).shape == (0, 4)
