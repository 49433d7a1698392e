"""Corpus-scale engine: re-sharding ingest, partitioned intermediates, the distributed exact
conservation check and the data-integrity checks at ingest."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.conservation import PUBLISHED_SCHEMA
from curation.errors import ConservationError, InputDataError, SpecError
from curation.executor import run_rank
from curation.plan import plan_steps
from curation.runner import run_pipeline
from curation.spec import parse_spec
from tests.helpers import make_spec, output_rows, run_all, write_docs

TEXTS = [f"document number {i} is long enough to keep" for i in range(40)]


def test_ingest_cuts_one_big_file_into_shards_of_the_target_size(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS, shards=1)
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}], parallelism=2)
    spec = spec.model_copy(update={"input": spec.input.model_copy(update={"shard_text_bytes": 200})})
    summary = run_all(spec)
    index = json.loads((tmp_path / "out" / "_work" / "corpus" / "_index.json").read_text())
    assert len(index["shards"]) > 3 and index["rows"] == 40
    assert all(s["bytes"] <= 200 + 50 for s in index["shards"])  # a shard closes once it passes the target
    assert [r["doc_id"] for r in output_rows(tmp_path / "out")] == [f"d{i:05d}" for i in range(40)]
    assert summary["totals"]["input_docs"] == 40


def test_jsonl_gzip_input_is_streamed(tmp_path: Path, fake_filter: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    with gzip.open(inp / "part.jsonl.gz", "wt") as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps({"doc_id": f"j{i}", "text": t}) + "\n")
    spec = parse_spec({"input": {"path": str(inp), "format": "jsonl", "idField": "doc_id"},
                       "output": {"path": str(tmp_path / "out")}, "stages": [{"type": fake_filter}]})
    assert run_pipeline(spec, progress=False)["totals"]["output_docs"] == 40


def test_the_same_id_in_two_files_is_refused_at_ingest_naming_both(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS[:4], shards=2, ids=["a", "b", "c", "a"])
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}])
    with pytest.raises(InputDataError, match=r"id 'a' appears twice: in .*input-000.parquet \(row 0\) and in "
                                             r".*input-001.parquet \(row 1\)"):
        run_pipeline(spec, progress=False)
    assert not (tmp_path / "out" / "data").exists()


def test_a_symlink_reaching_one_input_file_twice_is_refused(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS[:4], shards=1)
    os.symlink(inp / "input-000.parquet", inp / "again.parquet")
    with pytest.raises(InputDataError, match="are the same file"):
        run_pipeline(make_spec(inp, tmp_path / "out", [{"type": fake_filter}]), progress=False)


def test_an_output_symlinked_into_the_input_is_refused(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS[:4])
    (inp / "results").mkdir()
    os.symlink(inp / "results", tmp_path / "outlink")
    with pytest.raises(SpecError, match="overlap .after following symbolic links"):
        run_pipeline(make_spec(inp, tmp_path / "outlink", [{"type": fake_filter}]), progress=False)
    assert sorted(p.name for p in inp.iterdir()) == ["input-000.parquet", "input-001.parquet", "results"]


def test_a_changed_input_is_an_error_not_a_stale_success(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS[:10])
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}])
    run_pipeline(spec, progress=False)
    pq.write_table(pa.table({"doc_id": ["new"], "text": ["a brand new document that is long"]}), inp / "z.parquet")
    with pytest.raises(SpecError, match="the input changed since this output was started.*--restart"):
        run_pipeline(spec, progress=False)
    assert run_pipeline(spec, progress=False, restart=True)["totals"]["input_docs"] == 11


def test_reserved_column_names_are_refused_at_ingest(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS[:4], extra={"reason": ["x"] * 4})
    with pytest.raises(InputDataError, match="column 'reason' is reserved"):
        run_pipeline(make_spec(inp, tmp_path / "out", [{"type": fake_filter}]), progress=False)


def test_id_field_equal_to_text_field_is_refused() -> None:
    with pytest.raises(SpecError, match="idField and textField both name 'text'"):
        parse_spec({"input": {"path": "in", "idField": "text"}, "output": {"path": "o"},
                    "stages": [{"type": "heuristic-filter"}]})


def test_integer_ids_keep_their_type(tmp_path: Path, fake_filter: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"doc_id": pa.array([7, 8], pa.int64()), "text": [TEXTS[0], "tiny"]}), inp / "a.parquet")
    run_pipeline(make_spec(inp, tmp_path / "out", [{"type": fake_filter}]), progress=False)
    assert output_rows(tmp_path / "out")[0]["doc_id"] == 7
    assert output_rows(tmp_path / "out", "rejected")[0]["doc_id"] == 8


def _publish_ids(out: Path) -> list[Path]:
    return sorted((out / "_work").glob("*-finalize/scratch/ids/p*/r*.parquet"))


@pytest.mark.parametrize("tamper, message", [
    ("lose", "input ids are in neither output nor rejected"),
    ("duplicate", "more than once"),
    ("unknown", "not in the input"),
])
def test_distributed_conservation_check_catches_lost_duplicated_and_unknown_ids(
    tmp_path: Path, fake_filter: str, tamper: str, message: str
) -> None:
    inp = write_docs(tmp_path / "in", TEXTS, shards=3)
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}], parallelism=2)
    steps = plan_steps(spec)
    for step in steps:
        if step.id == "finalize.check":
            break
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
    victim = next(p for p in _publish_ids(tmp_path / "out") if pq.read_metadata(p).num_rows)
    table = pq.read_table(victim)
    if tamper == "lose":
        table = table.slice(1)
    elif tamper == "duplicate":
        table = pa.concat_tables([table, table.slice(0, 1)])
    else:
        table = pa.concat_tables([table, pa.table({"h_hi": pa.array([1], pa.uint64()), "h_lo": pa.array([0], pa.uint64()),
                                                   "id": ["ghost"], "kind": pa.array([1], pa.int8())},
                                                  schema=PUBLISHED_SCHEMA)])
    pq.write_table(table, victim)
    with pytest.raises(ConservationError, match=message):
        for rank in range(2):
            run_rank(spec, "finalize.check", rank, 2)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_intermediate_files_are_one_per_partition_and_rank(tmp_path: Path) -> None:
    texts = [f"text {i % 7} " * 5 for i in range(60)]
    inp = write_docs(tmp_path / "in", texts, shards=6)
    spec = make_spec(inp, tmp_path / "out", [{"type": "exact-dedup"}, {"type": "minhash-dedup"}], parallelism=2)
    run_all(spec)
    work = tmp_path / "out" / "_work"
    for folder in ("01-exact-dedup/scratch/hash", "02-minhash-dedup/scratch/signatures"):
        files = list((work / folder).glob("p*/r*.parquet"))
        assert 0 < len(files) <= 2 * 2, folder  # ranks x partitions, not shards x partitions


def test_ordered_publish_groups_output_shards_so_open_files_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 10M documents a curriculum with 2,000 rows per output shard asked for ~5,000 shards, and
    publish held one open writer per shard (4.8 GB per rank). Pieces now go to groups of consecutive
    output shards (~PIECE_BYTES of text each): same output, at most ranks x groups piece files."""
    from curation.stages import finalize

    texts = [f"document {i} " + "lorem ipsum dolor " * (i % 13 + 1) for i in range(400)]
    inp = write_docs(tmp_path / "in", texts, shards=3)
    stages = [{"type": "curriculum", "params": {"signal": "length", "order": "ascending", "rowsPerShard": 7}}]
    run_all(make_spec(inp, tmp_path / "one", stages, parallelism=2))
    monkeypatch.setattr(finalize, "PIECE_BYTES", 2_000)  # many groups of a few shards each
    run_all(make_spec(inp, tmp_path / "grouped", stages, parallelism=2))
    for sub in ("data", "rejected"):
        names = sorted(p.name for p in (tmp_path / "one" / sub).glob("part-*.parquet"))
        assert names == sorted(p.name for p in (tmp_path / "grouped" / sub).glob("part-*.parquet"))
        for name in names:
            assert pq.read_table(tmp_path / "one" / sub / name) == pq.read_table(tmp_path / "grouped" / sub / name)
    assert len(list((tmp_path / "one" / "data").glob("part-*.parquet"))) == 58  # ceil(400 / 7)
    pieces = list((tmp_path / "one" / "_work").rglob("pieces/*/*.parquet"))
    assert len(pieces) <= 2  # one group (the whole text is below PIECE_BYTES) x 2 ranks
    grouped = list((tmp_path / "grouped" / "_work").rglob("pieces/*/*.parquet"))
    assert 2 < len(grouped) <= 2 * 58


def test_stage_intermediates_are_released_before_publish_and_the_output_is_unchanged(tmp_path: Path) -> None:
    # MinHash side files, band and hash partitions are dead once every stage is done: publish
    # deletes them (unless keepWork) so _work does not hold them beside its pieces.
    from curation.layout import RunLayout

    texts = [f"document number {i} " + " ".join(f"w{(i * 7 + j) % 50}" for j in range(60)) for i in range(60)]
    texts += texts[:10]  # exact duplicates
    inp = write_docs(tmp_path / "in", texts, shards=3)
    stages = [{"type": "exact-dedup"}, {"type": "minhash-dedup"},
              {"type": "curriculum", "params": {"signal": "length", "rowsPerShard": 20}}]
    kept = make_spec(inp, tmp_path / "kept", stages, keep_work=True, parallelism=2)
    released = make_spec(inp, tmp_path / "released", stages, keep_work=False, parallelism=2)
    run_all(kept)
    steps = plan_steps(released)
    publish = next(i for i, s in enumerate(steps) if s.id == "finalize.publish")
    for step in steps[:publish + 1]:
        for rank in range(step.world_size):
            run_rank(released, step.id, rank, step.world_size)
    assert (Path(RunLayout.of(str(tmp_path / "kept")).stage_scratch(2, "minhash-dedup").path) / "sigs").is_dir()
    layout = RunLayout.of(str(tmp_path / "released"))
    minhash = Path(layout.stage_scratch(2, "minhash-dedup").path)
    assert not (minhash / "sigs").exists() and not any(minhash.iterdir())
    curriculum = Path(layout.stage_scratch(3, "curriculum").path)
    assert sorted(p.name for p in curriculum.iterdir()) == ["curriculum.json", "order.json"]
    assert Path(layout.stage_root(2, "minhash-dedup").path, "decisions").is_dir()  # decisions stay
    for step in steps[publish + 1:]:
        for rank in range(step.world_size):
            run_rank(released, step.id, rank, step.world_size)
    for sub in ("data", "rejected"):
        assert output_rows(tmp_path / "released", sub) == output_rows(tmp_path / "kept", sub)
