"""input.readInPlace: Parquet input is read where it lies; the output is the copy mode's, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import InputDataError
from curation.layout import RunLayout
from tests.helpers import make_spec, run_all

STAGES: list[dict[str, Any]] = [
    {"type": "exact-dedup"},
    {"type": "minhash-dedup", "params": {"ngram": 3, "bands": 8, "rowsPerBand": 4}},
    {"type": "heuristic-filter"},
    {"type": "curriculum", "params": {"signal": "compression_ratio", "rowsPerShard": 40}},
]
WORDS = ["river", "stone", "cloud", "forest", "lamp", "window", "garden", "letter", "bridge", "autumn", "market", "silver"]


def _texts(n: int) -> list[str]:
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * (i % 5 + 1)) % len(WORDS)] for k in range(40 + i % 30)]
        out.append(" ".join(words).capitalize() + f". Document {i} ends here.")
    for i in range(0, n, 9):  # exact copies
        out[i + 1 if i + 1 < n else i] = out[i]
    return out


def _write(folder: Path, texts: list[str], row_group: int, files: int = 3, ids: bool = True,
           extra: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        rows = list(range(f, len(texts), files))
        cols: dict[str, Any] = {"text": pa.array([texts[i] for i in rows], pa.string())}
        if ids:
            cols["doc_id"] = pa.array([f"d{i:05d}" for i in rows])
        if extra:
            cols["lang"] = pa.array(["en" if i % 3 else "fr" for i in rows], pa.large_string())
        pq.write_table(pa.table(cols), folder / f"part-{f:03d}.parquet", row_group_size=row_group)
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _published(out: Path) -> dict[str, pa.Table]:
    """data/ and rejected/, every row, sorted by id (shard boundaries may differ: in place they fall
    on row-group boundaries, in a copy at the exact text size)."""
    tables = {sub: pq.read_table(out / sub) for sub in ("data", "rejected")}
    return {sub: t.sort_by([(t.column_names[0], "ascending")]) for sub, t in tables.items()}


def _run(inp: Path, out: Path, in_place: bool, input_kw: dict[str, Any] | None = None,
         stages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = make_spec(inp, out, stages or STAGES, parallelism=2)
    data = spec.model_dump(by_alias=True)
    data["input"].update({"readInPlace": in_place, **(input_kw or {})})
    spec = type(spec).model_validate(data)
    return run_all(spec)


def _index(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "_work" / "corpus" / "_index.json").read_text())
    return result


def test_in_place_output_equals_the_copy_and_the_text_is_not_copied(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in", _texts(300), row_group=10)
    before = _digest(inp)
    a = _run(inp, tmp_path / "a", in_place=True, input_kw={"shardTextBytes": 10000})
    b = _run(inp, tmp_path / "b", in_place=False, input_kw={"shardTextBytes": 10000})
    assert _digest(inp) == before  # the input is only read
    pa_, pb = _published(tmp_path / "a"), _published(tmp_path / "b")
    assert pa_.keys() == pb.keys() and all(pa_[k].equals(pb[k]) for k in pa_)
    assert a["output"]["docs"] == b["output"]["docs"] and a["output"]["docs"] < 300
    index = _index(tmp_path / "a")
    assert all(f["in_place"] for f in index["files"])
    shards = index["shards"]
    assert len(shards) > len(index["files"])  # several shards per file, cut at row-group boundaries
    for s in shards:
        assert s["row_groups"][0] < s["row_groups"][1]
        assert pq.read_schema(tmp_path / "a" / "_work" / "corpus" / s["name"]).names == ["id", "_bytes", "_reject"]
    corpus_bytes = sum(p.stat().st_size for p in (tmp_path / "a" / "_work" / "corpus").glob("*.parquet"))
    copied_bytes = sum(p.stat().st_size for p in (tmp_path / "b" / "_work" / "corpus").glob("*.parquet"))
    assert corpus_bytes < copied_bytes  # ids and sizes only (tiny files here: mostly Parquet footers)


def test_a_file_with_oversized_row_groups_is_copied_the_rest_read_in_place(tmp_path: Path) -> None:
    texts = _texts(240)
    inp = _write(tmp_path / "in", texts, row_group=5, files=2)
    pq.write_table(pq.read_table(inp / "part-001.parquet"), inp / "part-001.parquet", row_group_size=10_000)
    a = _run(inp, tmp_path / "a", in_place=True, input_kw={"shardTextBytes": 3000})
    b = _run(inp, tmp_path / "b", in_place=False, input_kw={"shardTextBytes": 3000})
    files = _index(tmp_path / "a")["files"]
    assert [f["in_place"] for f in files] == [True, False]
    pa_, pb = _published(tmp_path / "a"), _published(tmp_path / "b")
    assert pa_.keys() == pb.keys() and all(pa_[k].equals(pb[k]) for k in pa_)
    assert a["output"]["docs"] == b["output"]["docs"]


def test_derived_ids_sources_from_paths_and_invalid_text_match_the_copy(tmp_path: Path) -> None:
    texts: list[str | None] = list(_texts(120))
    texts[5] = None  # rejected as invalid-text under skipInvalid
    inp = tmp_path / "in"
    for src in ("web", "books"):
        (inp / src).mkdir(parents=True)
        pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), inp / src / "x.parquet", row_group_size=5)
    kw = {"skipInvalid": True, "sourceFromPath": "^([^/]+)/", "idField": None, "shardTextBytes": 3000}
    a = _run(inp, tmp_path / "a", in_place=True, input_kw=kw, stages=STAGES[:1])
    _run(inp, tmp_path / "b", in_place=False, input_kw=kw, stages=STAGES[:1])
    pa_, pb = _published(tmp_path / "a"), _published(tmp_path / "b")
    assert pa_.keys() == pb.keys() and all(pa_[k].equals(pb[k]) for k in pa_)
    rejected = pa_["rejected"]
    assert "invalid-text" in rejected.column("reason").to_pylist()
    assert set(rejected.column("source").to_pylist()) <= {"web", "books"}
    shards = _index(tmp_path / "a")["shards"]
    assert not all(s["clean"] for s in shards) and any(s["clean"] for s in shards)
    assert a["input"]["docs"] == 240


def test_an_input_file_changed_after_ingest_is_an_error_naming_it(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in", _texts(90), row_group=15)
    out = tmp_path / "a"
    _run(inp, out, in_place=True)
    corpus = RunLayout.of(str(out)).corpus
    assert corpus.read(0, ["text"]).num_rows == corpus.shard_rows(0)
    victim = Path(corpus.index["files"][corpus.index["shards"][0]["file"]]["path"])
    table = pq.read_table(victim)
    pq.write_table(table.slice(1), victim, row_group_size=15)
    with pytest.raises(InputDataError, match=r"changed since ingest.*--restart"):
        RunLayout.of(str(out)).corpus.read(0, ["text"])
    os.remove(victim)
    with pytest.raises(InputDataError, match="input file missing"):
        RunLayout.of(str(out)).corpus.read(0, ["text"])
    # ids, sizes and ingest's rejects live in the shard's own file: readable without the input
    assert RunLayout.of(str(out)).corpus.read(0, ["id", "_bytes"]).num_rows == corpus.shard_rows(0)
