"""Issue 10, items 1-6, end to end through the CLI: the input is never written, a changed input is
never a stale success, user columns and id types survive, repeated ids are refused early."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.adversarial.support import (
    assert_one_clear_line,
    digest,
    texts,
    thresher,
    write_input,
    write_parquet,
    write_spec,
)

pytestmark = pytest.mark.adversarial


def test_item1_output_symlinked_into_the_input_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    (inp / "results").mkdir()
    os.symlink(inp / "results", tmp_path / "outlink")
    before = digest(inp)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "elsewhere")
    result = thresher("run", "--quiet", str(spec), "--output", str(tmp_path / "outlink"))
    assert_one_clear_line(result, 2, f"output.path {tmp_path / 'outlink'} and input.path {inp} overlap "
                                     "(after following symbolic links); the output must be outside them")
    assert digest(inp) == before
    assert thresher("validate", str(spec), "--check-data").out.count("20 documents") == 1


def test_item2_a_rerun_after_the_input_changed_is_an_error_not_a_stale_success(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    assert thresher("run", "--quiet", str(spec)).code == 0
    write_input(tmp_path / "more", files=1, rows=5, prefix="new")
    os.rename(tmp_path / "more" / "part-0.parquet", inp / "part-9.parquet")
    result = thresher("run", "--quiet", str(spec))
    assert_one_clear_line(result, 2, "the input changed since this output was started",
                          "use a new output or rerun with --restart")
    restarted = thresher("run", "--quiet", "--restart", str(spec))
    assert restarted.code == 0 and "25 documents in" in restarted.out


def test_item2_an_input_file_deleted_after_a_killed_ingest_is_named_as_a_changed_input(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in", files=3)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", parallelism=3)
    # a run killed during ingest: rank 0 of ingest.read finished, the others never ran
    assert thresher("worker", "--spec", str(spec), "--step", "ingest.read", "--rank", "0",
                    "--termination-log", str(tmp_path / "term")).code == 0
    (inp / "part-2.parquet").unlink()
    result = thresher("run", "--quiet", str(spec))
    assert_one_clear_line(result, 2, "the input changed since this output was started")
    assert "ids repeated" not in result.err


@pytest.mark.parametrize("column", ["reason", "curriculum_position", "synthetic_source_id"])  # rejected/, data/, both
def test_item3_an_input_column_with_a_reserved_name_is_refused(tmp_path: Path, column: str) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ["a", "b"], "text": texts(2), column: ["x", "y"]})
    before = digest(inp)
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")))
    assert_one_clear_line(result, 2, f"a.parquet: column '{column}' is reserved for Thresher's own annotations",
                          "rename it in the input")
    assert digest(inp) == before


def test_item4_text_field_equal_to_id_field_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", idField="text")
    result = thresher("run", str(spec))
    assert_one_clear_line(result, 2, "idField and textField both name 'text'; the id must be its own column")
    assert not (tmp_path / "out").exists()


def test_item5_integer_ids_keep_their_type_in_data_and_rejected(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": pa.array([199, 7, 8], pa.int64()), "text": ["same", "same", "x y"]})
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    assert thresher("run", "--quiet", str(spec)).code == 0
    data, rejected = pq.read_table(tmp_path / "out" / "data"), pq.read_table(tmp_path / "out" / "rejected")
    assert data.schema.field("doc_id").type == pa.int64() == rejected.schema.field("doc_id").type
    assert sorted(data.column("doc_id").to_pylist() + rejected.column("doc_id").to_pylist()) == [7, 8, 199]


def test_item5_an_id_whose_type_differs_between_files_is_refused(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": pa.array([199], pa.int64()), "text": texts(1)})
    write_parquet(inp / "b.parquet", {"doc_id": ["199"], "text": texts(1, "b")})
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")))
    assert_one_clear_line(result, 2, f"{inp / 'b.parquet'}: column 'doc_id' has type string but int64 in "
                                     f"{inp / 'a.parquet'}; all input files must have the same column types")


def test_item5_a_float_id_is_refused(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": [1.0, 2.0], "text": texts(2)})
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")))
    assert_one_clear_line(result, 2, "id column 'doc_id' has type double; ids must be strings or integers")


def test_item6_the_same_id_in_two_files_is_refused_at_ingest_naming_both(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ["x", "y"], "text": texts(2)})
    write_parquet(inp / "b.parquet", {"doc_id": ["z", "x"], "text": texts(2, "b")})
    before = digest(inp)
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")))
    assert_one_clear_line(result, 2, f"id 'x' appears twice: in {inp / 'a.parquet'} (row 0) and in "
                                     f"{inp / 'b.parquet'} (row 1); ids must be unique across all input files")
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "rejected").exists()
    assert digest(inp) == before


def test_item6_a_symlink_reaching_one_file_twice_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in", files=1)
    os.symlink(inp / "part-0.parquet", inp / "again.parquet")
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")))
    assert_one_clear_line(result, 2, "are the same file", "remove the link so every document is read once")
