"""The batch-by-batch read path (`dataset.read_parquet`, `Corpus.read(rows=...)`, `CorpusView.read_shard`):
the same tables as a whole-row-group read, filtered afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation import dataset
from curation.corpus import ROW, Corpus, CorpusView, StageFiles
from curation.dataset import Location, read_parquet, read_table
from tests.unit.test_read_in_place import _published, _run, _texts, _write


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read goes batch by batch, a few rows per batch."""
    monkeypatch.setattr(dataset, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(dataset, "BATCH_BYTES", 300)


def _file(tmp_path: Path, n: int = 257, row_group: int = 50) -> pq.ParquetFile:
    rng = np.random.default_rng(0)
    text = ["" if i % 11 == 0 else ("word " * int(rng.integers(1, 40)) + str(i)) for i in range(n)]
    table = pa.table({
        "id": pa.array([f"d{i}" for i in range(n)]),
        "text": pa.array([None if i % 13 == 5 else t for i, t in enumerate(text)], pa.string()),
        "big": pa.array([t.upper() for t in text], pa.large_string()),
        "raw": pa.array([None if i % 7 == 0 else t.encode() for i, t in enumerate(text)], pa.binary()),
        "score": pa.array([None if i % 5 == 0 else i / 3 for i in range(n)], pa.float64()),
        "flag": pa.array([i % 3 == 0 for i in range(n)]),
        "tags": pa.array([[t[:3]] * (i % 3) for i, t in enumerate(text)], pa.list_(pa.string())),
        "source": pa.array(["a" if i % 2 else "b" for i in range(n)]).dictionary_encode(),
    }).replace_schema_metadata({"origin": "test"})
    path = tmp_path / "f.parquet"
    pq.write_table(table, path, row_group_size=row_group)
    return pq.ParquetFile(path)


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema, check_metadata=True)
    assert a.equals(b)
    assert [c.num_chunks for c in a.columns] == [c.num_chunks for c in b.columns]


@pytest.mark.parametrize("columns", [None, ["text"], ["raw", "id"], ["score", "flag", "big"], ["tags", "text"],
                                     ["source", "text", "score"]])
@pytest.mark.parametrize("groups", [None, [0], [1, 2, 3], [5]])
def test_read_parquet_equals_read_row_groups(tmp_path: Path, small_batches: None, columns: list[str] | None,
                                             groups: list[int] | None) -> None:
    pf = _file(tmp_path)
    old = pf.read(columns=columns) if groups is None else pf.read_row_groups(groups, columns=columns)
    _same(read_parquet(pf, groups, columns), old)
    rng = np.random.default_rng(1)
    for mask in (rng.random(old.num_rows) < 0.7, np.zeros(old.num_rows, bool), np.ones(old.num_rows, bool)):
        new = read_parquet(pf, groups, columns, mask)
        assert new.schema.equals(old.schema, check_metadata=True) and new.equals(old.filter(pa.array(mask)))


def test_a_column_past_the_chunk_limit_is_split_into_chunks(tmp_path: Path, small_batches: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pf = _file(tmp_path)
    monkeypatch.setattr(dataset._Strings, "max_bytes", 500)
    old = pf.read(columns=["text", "raw"])
    new = read_parquet(pf, None, ["text", "raw"])
    assert new.equals(old) and new.column("text").num_chunks > 1
    assert all(sum(len(v.as_py() or "") for v in c) <= 500 for c in new.column("text").chunks)


def test_big_reads_go_batch_by_batch_small_ones_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pf = _file(tmp_path)
    calls: list[int] = []
    real = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, batch_size: int = 65536, **kw: object) -> object:
        calls.append(batch_size)
        return real(self, batch_size=batch_size, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    _same(read_parquet(pf, None, ["text"]), pf.read(columns=["text"]))
    assert calls == []  # under STREAM_MIN_BYTES: one read_row_groups
    monkeypatch.setattr(dataset, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(dataset, "BATCH_BYTES", 1000)
    _same(read_parquet(pf, None, ["text"]), pf.read(columns=["text"]))
    assert len(calls) == pf.metadata.num_row_groups and max(calls) < 50  # a row group at a time, small batches


def test_read_table_rows(tmp_path: Path, small_batches: None) -> None:
    pf = _file(tmp_path)
    loc = Location.of(str(tmp_path / "f.parquet"))
    mask = np.arange(pf.metadata.num_rows) % 4 != 1
    _same(read_table(loc, ["text", "score"]), pf.read(columns=["text", "score"]))
    assert read_table(loc, ["id", "tags"], mask).equals(pf.read(columns=["id", "tags"]).filter(pa.array(mask)))
    with pytest.raises(ValueError, match="row flags"):
        read_table(loc, ["id"], mask[:-1])


@pytest.mark.parametrize("in_place", [True, False])
def test_views_read_batch_by_batch_equal_the_filtered_universe(tmp_path: Path, small_batches: None,
                                                               in_place: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelines on the batch path publish what the whole-read path publishes; every view's
    `read_shard` is its universe filtered by `alive`, and `Corpus.read(rows=)` the read filtered."""
    inp = _write(tmp_path / "in", _texts(300), row_group=10)
    _run(inp, tmp_path / "a", in_place=in_place, input_kw={"shardTextBytes": 10000})
    batched = _published(tmp_path / "a")
    work = tmp_path / "a" / "_work"
    corpus = Corpus(Location.of(str(work / "corpus")))
    roots = sorted(p for p in work.iterdir() if p.is_dir() and p.name[:2].isdigit() and (p / "decisions").is_dir()
                   and not p.name.startswith("00-"))
    stages = [StageFiles(Location.of(str(p))) for p in roots]
    assert len(stages) >= 3
    some_removed = False
    for k in range(len(stages) + 1):
        view = CorpusView(corpus, stages[:k])
        for shard in range(corpus.num_shards):
            for columns in (None, ["text"], ["id", "lang"], []):
                uni = view.universe(shard, columns)
                some_removed |= not uni.alive.all()
                expect = uni.table.filter(pa.array(uni.alive))
                if columns is not None:
                    expect = expect.select([ROW, "_bytes", *columns])
                got = view.read_shard(shard, columns)
                assert got.schema.equals(expect.schema) and got.equals(expect), (k, shard, columns)
            mask = np.arange(corpus.shard_rows(shard)) % 3 != 0
            for columns in (None, ["text", "id"]):
                assert corpus.read(shard, columns, rows=mask).equals(corpus.read(shard, columns).filter(pa.array(mask)))
    assert some_removed
    # and the whole-read path publishes the same
    monkeypatch.setattr(dataset, "STREAM_MIN_BYTES", 16 << 20)
    _run(inp, tmp_path / "b", in_place=in_place, input_kw={"shardTextBytes": 10000})
    whole = _published(tmp_path / "b")
    assert batched.keys() == whole.keys() and all(batched[k].equals(whole[k]) for k in batched)
