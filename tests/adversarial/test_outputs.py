"""Issue 10, items 12 and 13: `data/` opens with any Parquet reader; a successful run leaves no
temporary files; a report that cannot be written after the data is published is a warning."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.executor import run_rank
from curation.plan import plan_steps
from curation.spec import load_spec
from tests.adversarial.support import start_thresher, thresher, write_input, write_spec

pytestmark = pytest.mark.adversarial


def test_item12_data_and_rejected_open_with_any_parquet_reader(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in", rows=30)
    stages = [{"type": "exact-dedup"}, {"type": "curriculum", "params": {"signal": "length", "rowsPerShard": 16}}]
    assert thresher("run", "--quiet", str(write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out", stages))).code == 0
    data = tmp_path / "out" / "data"
    assert pq.read_table(data).num_rows == 60
    assert (data / "_mixture.json").exists() and (data / "_manifest.json").exists()
    assert all(n.endswith(".parquet") for n in os.listdir(data) if not n.startswith(("_", ".")))


def test_item13_a_successful_rerun_leaves_no_temporary_files(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in", files=4, rows=200)
    spec = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    out = tmp_path / "out"
    run = start_thresher("run", "--quiet", "--workers", "1", str(spec))
    while run.poll() is None and not (out / "_work" / "spec.json").exists():
        time.sleep(0.005)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    for folder in (out, out / "_work", out / "data", out / "_work" / "corpus"):  # what a kill mid-write leaves
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".tmp-0123456789abcdef-part-00000.parquet").write_bytes(b"PAR1 half written")
    rerun = thresher("run", "--quiet", str(spec))
    assert rerun.code == 0, rerun.err
    assert sorted(str(p.relative_to(out)) for p in out.rglob(".tmp-*")) == []


def test_item13_a_report_that_cannot_be_written_is_a_warning_not_a_failed_run(tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in")
    spec_path = write_spec(tmp_path / "spec.yaml", inp, tmp_path / "out")
    spec = load_spec(spec_path)
    steps = plan_steps(spec)
    for step in steps[:-1]:  # everything but the last step, as a killed run leaves it
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
    (tmp_path / "out" / "report.html").mkdir()  # the report's name is taken: writing it fails
    result = thresher("run", "--quiet", str(spec_path))
    assert result.code == 0, result.err
    assert f"warning: could not write {tmp_path / 'out' / 'report.html'}" in result.err
    assert "conservation holds" in result.out and pq.read_table(tmp_path / "out" / "data").num_rows == 20
