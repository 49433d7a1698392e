"""Issue 10, items 9, 14 and 16: one clear line (what, which file or field, what to do) and the
documented exit code instead of a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
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


def test_item9_a_column_whose_type_differs_between_files_is_refused_before_any_step(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ["a"], "text": texts(1), "score": pa.array([3], pa.int64())})
    write_parquet(inp / "b.parquet", {"doc_id": ["b"], "text": texts(1, "b"), "score": ["high"]})
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out",
                      stages=[{"type": "exact-dedup"}, {"type": "curriculum", "params": {"signal": "length"}}])
    result = thresher("run", "--quiet", str(spec))
    assert_one_clear_line(result, 2, f"{inp / 'b.parquet'}: column 'score' has type string but int64 in "
                                     f"{inp / 'a.parquet'}; all input files must have the same column types")
    assert not (tmp_path / "out").exists()  # refused before any step ran


@pytest.mark.parametrize("ids", [[{"a": 1}, {"a": 2}], [[1], [2]]], ids=["struct", "list"])
def test_item9_a_nested_id_column_is_refused(tmp_path: Path, ids: list[object]) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"doc_id": ids, "text": texts(2)})
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")))
    assert_one_clear_line(result, 2, f"{inp / 'a.parquet'}: id column 'doc_id' has type ",
                          "ids must be strings or integers")
    assert not (tmp_path / "out").exists()


DISK_FULL_SCRIPT = """
set -u
mount -t tmpfs -o size=96k tmpfs "$FULL" || exit 97
"$PY" -m curation.cli run --quiet "$SPEC" --output "$FULL/out" >"$LOG/1.out" 2>"$LOG/1.err"; echo $? >"$LOG/1.rc"
mount -o remount,size=64m "$FULL"
"$PY" -m curation.cli run --quiet "$SPEC" --output "$FULL/out" >"$LOG/2.out" 2>"$LOG/2.err"; echo $? >"$LOG/2.rc"
find "$FULL/out" -name '.tmp-*' >"$LOG/tmp-files"
"""


def test_item9_disk_full_names_the_path_and_says_the_run_resumes(tmp_path: Path) -> None:
    """A real ENOSPC: a 96 KiB tmpfs in a private mount namespace (no root needed with user namespaces)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        pytest.skip("needs Linux mount namespaces (unshare)")
    inp = write_input(tmp_path / "in", files=4, rows=300)
    (tmp_path / "full").mkdir()
    (tmp_path / "log").mkdir()
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "unused")
    env = {"FULL": str(tmp_path / "full"), "LOG": str(tmp_path / "log"), "SPEC": str(spec), "PY": sys.executable,
           "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", DISK_FULL_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0 or not (tmp_path / "log" / "1.rc").exists():
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()[:200]}")
    log = tmp_path / "log"
    err = (log / "1.err").read_text()
    assert "Traceback" not in err and int((log / "1.rc").read_text()) == 4, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: disk full writing {tmp_path / 'full' / 'out'}"), line
    assert line.endswith("; free space and rerun; the run resumes"), line
    assert int((log / "2.rc").read_text()) == 0, (log / "2.err").read_text()
    assert "1,200 documents in" in (log / "2.out").read_text()
    assert (log / "tmp-files").read_text() == ""


@pytest.mark.parametrize("kind", ["file", "dangling-symlink"])
def test_item9_an_output_path_that_is_a_file_or_a_dangling_symlink_is_refused(tmp_path: Path, kind: str) -> None:
    inp = write_input(tmp_path / "in")
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("keep me")
        expected = f"output.path {out} is a file; choose a folder"
    else:
        out.symlink_to(tmp_path / "nowhere")
        expected = f"output.path {out} is a dangling symbolic link; remove it or choose another"
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, out)))
    assert_one_clear_line(result, 2, expected)
    assert kind != "file" or out.read_text() == "keep me"


def test_item9_an_output_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    (tmp_path / "afile").write_text("x")
    result = thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "afile" / "out")))
    assert_one_clear_line(result, 2, f"output.path {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file")


def test_item9_a_spec_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes("input: {path: caf\u00e9}\n".encode("latin-1"))
    result = thresher("run", str(spec))
    assert_one_clear_line(result, 2, f"{spec}: not UTF-8 text (byte 0xe9 at offset 17); save the spec as UTF-8")


def test_item9_a_spec_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    result = thresher("validate", str(tmp_path))
    assert_one_clear_line(result, 2, f"{tmp_path}: is a folder, not a spec file; name the pipeline's YAML file")


def test_item9_a_job_completion_index_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    log = tmp_path / "termination-log"
    result = thresher("worker", "--spec", str(spec), "--step", "ingest.read", "--termination-log", str(log),
                      env={"JOB_COMPLETION_INDEX": "abc"})
    assert_one_clear_line(result, 2, "JOB_COMPLETION_INDEX is 'abc', not a rank number (0, 1, 2, ...); "
                                     "pass --rank or run in an Indexed Job")
    assert json.loads(log.read_text())["reason"] == "InvalidSpec"
    assert not (tmp_path / "out").exists()


def test_item14_a_duplicate_yaml_key_is_refused_naming_the_key_and_line(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"input:\n  path: {inp}\n  idField: doc_id\noutput:\n  path: {tmp_path / 'out'}\n"
                    f"stages:\n  - type: exact-dedup\noutput:\n  path: {tmp_path / 'other'}\n")
    result = thresher("run", str(spec))
    assert_one_clear_line(result, 2, f"{spec}: line 8: key 'output' appears twice in one mapping "
                                     "(first on line 4); remove one of them")
    assert not (tmp_path / "out").exists() and not (tmp_path / "other").exists()


def test_item14_a_duplicate_key_inside_stage_params_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("input: {path: in}\noutput: {path: out}\nstages:\n  - type: minhash-dedup\n"
                    "    params:\n      bands: 10\n      bands: 20\n")
    result = thresher("validate", str(spec))
    assert_one_clear_line(result, 2, f"{spec}: line 7: key 'bands' appears twice in one mapping (first on line 6)")


def test_item16_an_id_column_without_id_field_says_what_to_set(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_parquet(inp / "a.parquet", {"id": ["a", "b"], "text": texts(2)})
    before = digest(inp)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", idField=None)
    result = thresher("run", "--quiet", str(spec))
    assert_one_clear_line(result, 2, f"{inp / 'a.parquet'}: the input has a column 'id' but input.idField "
                                     "is not set; set `idField: id`")
    assert "'None'" not in result.err
    assert digest(inp) == before
