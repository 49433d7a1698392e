"""`thresher worker`: one rank of one step, stats in the termination message, clear exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from curation.cli import main
from curation.plan import plan_steps
from curation.spec import load_spec
from curation.worker import TERMINATION_LIMIT, termination_message
from tests.helpers import write_docs

TEXTS = ["a long enough document number one", "another long enough document here", "tiny", "x"]


def spec_file(tmp_path: Path) -> Path:
    inp = write_docs(tmp_path / "in", TEXTS, shards=2)
    spec = {"input": {"path": str(inp), "idField": "doc_id"}, "output": {"path": str(tmp_path / "out")},
            "parallelism": 2, "stages": [{"type": "heuristic-filter"}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_worker_runs_each_rank_and_writes_its_stats_to_the_termination_log(
    tmp_path: Path, fake_filter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_file(tmp_path)
    log = tmp_path / "termination-log"
    steps = [(s.id, s.world_size) for s in plan_steps(load_spec(spec))]
    for step, world in steps:
        for rank in range(world):
            monkeypatch.setenv("JOB_COMPLETION_INDEX", str(rank))
            code = main(["worker", "--spec", str(spec), "--step", step, "--world-size", str(world),
                         "--termination-log", str(log), "--metrics-port", "0"])
            assert code == 0
            stats = json.loads(log.read_text())
            assert stats["step"] == step and stats["rank"] == rank
    assert json.loads(log.read_text())["docs_out"] == 2
    assert (tmp_path / "out" / "summary.json").exists()


def test_worker_exits_2_with_a_message_when_the_step_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "log"
    code = main(["worker", "--spec", str(spec_file(tmp_path)), "--step", "nope.x", "--rank", "0",
                 "--termination-log", str(log), "--metrics-port", "0"])
    assert code == 2
    assert "unknown step 'nope.x'" in capsys.readouterr().err
    assert json.loads(log.read_text())["reason"] == "InvalidSpec"


def test_worker_exits_4_when_started_before_the_previous_step(tmp_path: Path, fake_filter: str) -> None:
    spec = spec_file(tmp_path)
    assert main(["worker", "--spec", str(spec), "--step", "ingest.read", "--rank", "0", "--world-size", "2",
                 "--termination-log", str(tmp_path / "l"), "--metrics-port", "0"]) == 0
    code = main(["worker", "--spec", str(spec), "--step", "heuristic-filter.filter", "--rank", "0",
                 "--world-size", "2", "--termination-log", str(tmp_path / "l"), "--metrics-port", "0"])
    assert code == 4


def test_termination_message_fits_the_kubernetes_limit() -> None:
    stats = {"step": "s", "rank": 0, "removed": {f"reason-{i}": i for i in range(1000)}, "extra": {"x": "y" * 9000}}
    text = termination_message(stats)
    assert len(text.encode()) <= TERMINATION_LIMIT
    assert "extra" not in json.loads(text)
