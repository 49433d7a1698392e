"""The engine: ingest, steps, markers, finalize, conservation, reruns — with a tiny test stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import InputDataError, SpecError, StepError
from curation.executor import run_rank
from curation.plan import plan_steps
from curation.runner import run_pipeline
from tests.helpers import make_spec, output_rows, run_all, write_docs

TEXTS = ["short", "a long enough document number one", "tiny", "another long enough document here",
         "third long enough document is this", "x"]


def test_pipeline_keeps_and_rejects_every_document_once(tmp_path: Path, fake_filter: str) -> None:
    spec = make_spec(write_docs(tmp_path / "in", TEXTS), tmp_path / "out", [{"type": fake_filter}])
    summary = run_all(spec)
    kept = {r["doc_id"] for r in output_rows(tmp_path / "out")}
    rejected = output_rows(tmp_path / "out", "rejected")
    assert kept == {"d00001", "d00003", "d00004"}
    assert {r["doc_id"] for r in rejected} == {"d00000", "d00002", "d00005"}
    assert {(r["stage"], r["reason"]) for r in rejected} == {("heuristic-filter", "too-short")}
    assert summary["conservation"]["holds"] is True
    assert summary["totals"] == {"input_docs": 6, "output_docs": 3, "real_output_docs": 3, "rejected_docs": 3,
                                 "synthetic_docs": 0, "synthetic_rejected": 0, "kept_fraction": 0.5}
    stage = next(s for s in summary["stages"] if s["name"] == "heuristic-filter")
    assert stage["docs_in"] == 6 and stage["docs_out"] == 3 and stage["removed"] == {"too-short": 3}
    assert (tmp_path / "out" / "report.html").read_text().count("<img") >= 2
    manifest = json.loads((tmp_path / "out" / "data" / "_manifest.json").read_text())
    assert manifest["rows"] == 3 and manifest["schema"]["doc_id"] == "string"


def test_user_column_names_are_restored_in_output(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS, text_field="content", extra={"lang": ["en"] * 6})
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}])
    spec = spec.model_copy(update={"input": spec.input.model_copy(update={"text_field": "content"})})
    run_all(spec)
    row = output_rows(tmp_path / "out")[0]
    assert set(row) == {"doc_id", "content", "lang"}


def test_ids_are_derived_deterministically_when_input_has_none(tmp_path: Path, fake_filter: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"text": TEXTS}), inp / "web.parquet")
    for out in ("out1", "out2"):
        spec = make_spec(inp, tmp_path / out, [{"type": fake_filter}], )
        spec = spec.model_copy(update={"input": spec.input.model_copy(update={"id_field": None})})
        run_all(spec)
    ids1 = [r["id"] for r in output_rows(tmp_path / "out1")]
    assert ids1 == [r["id"] for r in output_rows(tmp_path / "out2")]
    assert ids1 == ["web:1", "web:3", "web:4"]


def test_results_do_not_depend_on_parallelism(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS * 3, shards=5, ids=[f"x{i}" for i in range(18)])
    outs = []
    for ranks in (1, 3):
        spec = make_spec(inp, tmp_path / f"out{ranks}", [{"type": fake_filter}], parallelism=ranks)
        run_all(spec)
        outs.append(output_rows(tmp_path / f"out{ranks}"))
    assert outs[0] == outs[1]


def test_rerun_of_a_finished_rank_does_nothing(tmp_path: Path, fake_filter: str) -> None:
    spec = make_spec(write_docs(tmp_path / "in", TEXTS), tmp_path / "out", [{"type": fake_filter}])
    run_all(spec)
    decisions = tmp_path / "out" / "_work" / "01-heuristic-filter" / "decisions" / "part-00000.parquet"
    before = decisions.stat().st_mtime_ns
    again = run_rank(spec, "heuristic-filter.filter", 0, 1)
    assert again["skipped"] is True
    assert decisions.stat().st_mtime_ns == before


def test_stages_write_decisions_not_copies_of_the_corpus(tmp_path: Path, fake_filter: str) -> None:
    spec = make_spec(write_docs(tmp_path / "in", TEXTS), tmp_path / "out", [{"type": fake_filter}])
    run_all(spec)
    decisions = pq.read_table(tmp_path / "out" / "_work" / "01-heuristic-filter" / "decisions" / "part-00000.parquet")
    assert decisions.column_names == ["_row", "reason"]  # no text: the corpus is written once, by ingest
    corpus = tmp_path / "out" / "_work" / "corpus"
    assert sorted(p.name for p in corpus.glob("*.parquet")) == ["f00000-0000.parquet", "f00001-0000.parquet"]


def test_work_folder_is_removed_after_a_successful_run_unless_kept(tmp_path: Path, fake_filter: str) -> None:
    spec = make_spec(write_docs(tmp_path / "in", TEXTS), tmp_path / "out", [{"type": fake_filter}], keep_work=False)
    run_pipeline(spec, progress=False)
    work = tmp_path / "out" / "_work"
    assert not (work / "corpus").exists() and not (work / "01-heuristic-filter").exists()
    assert output_rows(tmp_path / "out") and not list(tmp_path.glob("out/**/.tmp-*"))
    assert run_pipeline(spec, progress=False)["totals"]["input_docs"] == 6  # a rerun does nothing


def test_killed_rank_rerun_produces_identical_output(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS * 4, shards=4, ids=[f"k{i}" for i in range(24)])
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}], parallelism=2)
    run_all(spec)
    reference = output_rows(tmp_path / "out")
    # Simulate a rank killed after one of its shards: marker gone, one shard's decisions and stats
    # gone, and a stray temporary file left behind.
    work = tmp_path / "out" / "_work"
    shutil.rmtree(work / "_done" / "heuristic-filter.filter")
    for step in ("publish", "order", "check", "summary"):
        shutil.rmtree(work / "_done" / f"finalize.{step}")
    (work / "01-heuristic-filter" / "decisions" / "part-00002.parquet").unlink()
    (work / "01-heuristic-filter" / "scratch" / "_shard_stats" / "filter" / "s00002.json").unlink()
    (work / "01-heuristic-filter" / "decisions" / ".tmp-dead-part-00002.parquet").write_bytes(b"partial")
    run_pipeline(spec, workers=1, progress=False)
    assert output_rows(tmp_path / "out") == reference


def test_step_refuses_to_start_before_the_previous_step_finished(tmp_path: Path, fake_filter: str) -> None:
    spec = make_spec(write_docs(tmp_path / "in", TEXTS), tmp_path / "out", [{"type": fake_filter}])
    run_rank(spec, "ingest.read", 0, 1)
    with pytest.raises(StepError, match="has not finished"):
        run_rank(spec, "ingest.ids", 0, 1)


def test_world_size_must_match_the_plan(tmp_path: Path, fake_filter: str) -> None:
    spec = make_spec(write_docs(tmp_path / "in", TEXTS), tmp_path / "out", [{"type": fake_filter}], parallelism=2)
    with pytest.raises(SpecError, match="world size 2"):
        run_rank(spec, "ingest.read", 0, 3)


def test_output_folder_of_another_spec_is_refused(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS)
    run_all(make_spec(inp, tmp_path / "out", [{"type": fake_filter}]))
    other = make_spec(inp, tmp_path / "out", [{"type": fake_filter}], parallelism=2)
    with pytest.raises(SpecError, match="different spec"):
        run_pipeline(other, progress=False)


def test_plan_lists_steps_in_order_with_world_sizes(fake_filter: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, tmp_path / "o", [{"type": "minhash-dedup"}, {"type": "curriculum"}], parallelism=4)
    ids = [(s.id, s.world_size) for s in plan_steps(spec)]
    assert ids == [("ingest.read", 4), ("ingest.index", 1), ("ingest.ids", 4), ("ingest.check", 4),
                   ("minhash-dedup.signatures", 4), ("minhash-dedup.buckets", 4),
                   ("minhash-dedup.verify", 4), ("minhash-dedup.components", 1), ("minhash-dedup.names", 4),
                   ("minhash-dedup.filter", 4),
                   ("curriculum.score", 4),
                   ("curriculum.order", 1), ("curriculum.partition", 4), ("curriculum.rank", 4),
                   ("curriculum.write", 4), ("finalize.publish", 4), ("finalize.order", 4),
                   ("finalize.check", 4), ("finalize.summary", 1)]


def test_null_text_is_an_error_naming_file_and_row(tmp_path: Path, fake_filter: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": ["fine text here ok", None]}), inp / "f.parquet")
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}])
    with pytest.raises(InputDataError, match=r"f.parquet: 1 document\(s\) with null or non-UTF-8 text .*row 1, id b"):
        run_pipeline(spec, progress=False)


def test_skip_invalid_sends_bad_text_to_rejected(tmp_path: Path, fake_filter: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"doc_id": ["a", "b", "c"], "text": [b"long enough valid text", None, b"\xff\xfe bad"]},
                            schema=pa.schema([("doc_id", pa.string()), ("text", pa.binary())])), inp / "f.parquet")
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}])
    spec = spec.model_copy(update={"input": spec.input.model_copy(update={"skip_invalid": True})})
    summary = run_pipeline(spec, progress=False)
    rejected = {r["doc_id"]: r["reason"] for r in output_rows(tmp_path / "out", "rejected")}
    assert rejected == {"b": "invalid-text", "c": "invalid-text"}
    assert summary["totals"]["output_docs"] == 1
