"""Issue 10, items 15 and 17: every check that the spec and the input schema allow runs before any
step (`validate --check-data` and the start of `run`), and skipped input files are reported."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tests.adversarial.support import (
    assert_one_clear_line,
    texts,
    thresher,
    write_input,
    write_parquet,
    write_spec,
)

pytestmark = pytest.mark.adversarial
PREFLIGHT = (["validate", "--check-data"], ["run", "--quiet"])


def curriculum(signal: str) -> dict[str, object]:
    return {"type": "curriculum", "params": {"signal": signal}}


def test_item15_a_curriculum_signal_naming_a_missing_column_is_refused_before_any_step(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ["a", "b"], "text": texts(2), "year": [2001, 2002]})
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out",
                      stages=[{"type": "exact-dedup"}, {"type": "minhash-dedup"}, curriculum("quality_score")])
    for command in PREFLIGHT:
        result = thresher(*command, str(spec))
        assert_one_clear_line(result, 2, "spec.stages[2].params.signal: no column 'quality_score' in the "
                                         "documents; numeric columns: year, ",
                              "; built-in signals: length, words, compression_ratio")
    assert not (tmp_path / "out").exists()


def test_item15_a_curriculum_signal_on_a_text_column_is_refused_before_any_step(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ["a", "b"], "text": texts(2), "title": ["x", "y"]})
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", stages=[curriculum("title")])
    result = thresher("run", "--quiet", str(spec))
    assert_one_clear_line(result, 2, "spec.stages[0].params.signal: column 'title' has type string; "
                                     "the curriculum signal must be numeric")
    assert not (tmp_path / "out").exists()


def test_item15_a_signal_made_by_an_earlier_stage_passes_preflight(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    heuristic = {"type": "heuristic-filter", "params": {"c4": {"lineRemoval": "replace"}}}
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", stages=[heuristic, curriculum("c4_lines_removed")])
    result = thresher("validate", "--check-data", str(spec))
    assert result.code == 0, result.err
    late = write_spec(tmp_path / "late.yaml", inp, tmp_path / "out",
                      stages=[curriculum("c4_lines_removed"), heuristic])
    assert_one_clear_line(thresher("validate", "--check-data", str(late)), 2, "no column 'c4_lines_removed'")


def test_item15_a_text_column_of_the_wrong_type_is_refused_before_any_step(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ["a", "b"], "text": pa.array([1, 2], pa.int64())})
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    result = thresher("validate", "--check-data", str(spec))
    assert_one_clear_line(result, 2, f"{inp / 'a.parquet'}: text column 'text' has type int64, expected string")
    assert not (tmp_path / "out").exists()


def test_item15_a_missing_id_field_is_refused_before_any_step(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", idField="uuid")
    result = thresher("run", "--quiet", str(spec))
    assert_one_clear_line(result, 2, "no id column 'uuid' (columns: doc_id, text)")
    assert not (tmp_path / "out").exists()


def test_item15_keep_highest_quality_without_a_quality_column_is_refused_before_any_step(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    stage = {"type": "semantic-dedup", "params": {"keep": "highest-quality"}}
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", stages=[stage])
    result = thresher("validate", "--check-data", str(spec))
    assert_one_clear_line(result, 2, "stage semantic-dedup: keep highest-quality needs column 'quality_score' "
                                     "in its input; add a quality-score stage before it or set qualityColumn")


def test_item17_skipped_input_files_are_counted_and_named(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    write_input(tmp_path / "in" / "_tmp", files=1, prefix="t")
    write_input(tmp_path / "in" / ".cache", files=1, prefix="c")
    write_parquet(inp / "sub" / "_partial.parquet", {"doc_id": ["p"], "text": texts(1)})
    (inp / "_SUCCESS").write_text("")  # not a Parquet file: not counted
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    note = (f"skipped 3 files whose path has a component starting with '_' or '.' "
            f"(e.g. {inp / '.cache' / 'part-0.parquet'})")
    validate = thresher("validate", "--check-data", str(spec))
    assert validate.code == 0 and note in validate.out, validate.out
    assert "20 documents" in validate.out
    run = thresher("run", "--quiet", str(spec))
    assert run.code == 0 and note in run.err, run.err
    assert "20 documents in" in run.out
