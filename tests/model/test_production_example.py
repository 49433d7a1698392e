"""examples/production.yaml end to end: language ID, PII, dedup, heuristics, decontamination, sources."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.executor import with_output, with_paths
from curation.runner import run_pipeline
from curation.spec import load_spec

pytestmark = [pytest.mark.model, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_production_example_runs_end_to_end(tmp_path: Path, models_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "lid.176.ftz").symlink_to(models_dir / "lid.176.ftz")
    (models / "benchmarks").symlink_to(ROOT / "examples" / "models" / "benchmarks", target_is_directory=True)
    spec = load_spec(ROOT / "examples" / "production.yaml")
    spec = with_paths(with_output(spec, str(tmp_path / "out")), str(ROOT / "examples" / "data" / "production"),
                      str(models))
    summary = run_pipeline(spec, workers=2, progress=False)
    stages = {s["name"]: s for s in summary["stages"]}
    assert summary["conservation"]["holds"] and summary["input"]["docs"] == 4246
    rejected = pq.read_table(tmp_path / "out" / "rejected", columns=["doc_id", "stage", "reason"]).to_pylist()
    leaks = sorted(r["doc_id"] for r in rejected if r["stage"] == "decontaminate")
    assert leaks == ["forum-004", "forum-005"]  # the two planted leaks, nothing else
    pii = stages["pii-redaction"]["extra"]["pii"]
    assert pii["credit_card"] >= 20 and pii["iban"] >= 15 and pii["aws_access_key"] == 1
    kept = pq.read_table(tmp_path / "out" / "data", columns=["doc_id", "text", "dataset"]).to_pylist()
    support = [r["text"] for r in kept if r["dataset"] == "support"]
    assert len(support) == 15 and all("<EMAIL>" in t for t in support)
    sources = stages["source-policy"]["extra"]["sources"]
    assert sources["translations"]["removed_before"]["language-id"] == 48
    assert sources["forum"]["removed_here"] == {"source:licence": 2}
    assert sources["support"]["removed_here"] == {"source:cap": 9}
    assert max(s["loss"] for s in sources.values()) <= 0.9
