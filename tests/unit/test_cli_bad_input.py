"""Bad input gets one clear line naming the file/field, a non-zero exit, and an untouched input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curation.cli import main
from tests.helpers import write_docs

TEXTS = ["a long enough document number one", "another long enough document here", "tiny"]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_spec(tmp_path: Path, inp: Path, out: Path | None = None, stages: list[dict] | None = None,
               **input_kw: str) -> Path:
    spec = {"apiVersion": "thresher.dev/v1alpha1", "kind": "CurationJob", "metadata": {"name": "t"},
            "spec": {"input": {"path": str(inp), "idField": "doc_id", **input_kw},
                     "output": {"path": str(out or tmp_path / "out")},
                     "stages": stages or [{"type": "heuristic-filter"}]}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["run", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_corrupt_parquet_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS)
    data = (inp / "input-001.parquet").read_bytes()
    (inp / "input-001.parquet").write_bytes(data[: len(data) // 2])  # truncated
    before = digest(inp)
    code, err = run_cli(capsys, str(write_spec(tmp_path, inp)))
    assert code == 2
    assert err.startswith("error: ") and "input-001.parquet: not a readable Parquet file" in err
    assert len(err.splitlines()) == 1
    assert digest(inp) == before
    assert not (tmp_path / "out" / "summary.json").exists()


def test_missing_text_column_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS)
    code, err = run_cli(capsys, str(write_spec(tmp_path, inp, textField="body")))
    assert code == 2 and "no text column 'body' (columns: doc_id, text); set input.textField" in err


def test_empty_dataset_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_filter: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   inp / "empty.parquet")
    code, err = run_cli(capsys, str(write_spec(tmp_path, inp)))
    assert code == 2 and "the dataset is empty (0 documents)" in err


def test_folder_without_parquet_files_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_filter: str) -> None:
    (tmp_path / "in").mkdir()
    code, err = run_cli(capsys, str(write_spec(tmp_path, tmp_path / "in")))
    assert code == 2 and "no *.parquet files found" in err


def test_output_inside_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", TEXTS)
    before = digest(inp)
    code, err = run_cli(capsys, str(write_spec(tmp_path, inp, out=inp / "curated")))
    assert code == 2 and "overlap" in err
    assert digest(inp) == before


def test_unknown_stage_parameter_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_docs(tmp_path / "in", TEXTS)
    path = write_spec(tmp_path, inp, stages=[{"type": "minhash-dedup", "params": {"nrgam": 3}}])
    code, err = run_cli(capsys, str(path))
    assert code == 2 and err == f"error: {path}: spec.stages[0].params.nrgam: unknown field (check spelling; " \
                                 "see `thresher crd` for the schema)"


def test_single_huge_document_passes_through(tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_filter: str) -> None:
    huge = "word " * 2_000_000  # 10 MB
    inp = write_docs(tmp_path / "in", [huge, *TEXTS])
    code, _ = run_cli(capsys, str(write_spec(tmp_path, inp)))
    assert code == 0
    assert (tmp_path / "out" / "summary.json").exists()


def test_validate_prints_plan_and_minhash_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_docs(tmp_path / "in", TEXTS)
    path = write_spec(tmp_path, inp, stages=[{"type": "minhash-dedup"}])
    assert main(["validate", str(path), "--check-data"]) == 0
    out = capsys.readouterr().out
    assert "S-curve threshold ~0.72" in out and "minhash-dedup.components" in out and "3 documents found" in out
