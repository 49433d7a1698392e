"""source-policy: rules, deterministic caps, weights, per-source accounting and the loss guard."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.errors import SourceLossError
from curation.params.source_policy import SourcePolicyParams
from curation.stages.source_policy import cutoff_bin, rule_reasons
from tests.helpers import make_spec, output_rows, run_all, write_docs


def corpus(tmp_path: Path) -> Path:
    texts, sources, licences = [], [], []
    for i in range(300):
        src = ["wiki", "web", "books", "forum"][i % 4]
        texts.append(f"document {i} from {src} " + "word " * (i % 7 + 1))
        sources.append(src)
        licences.append("proprietary" if src == "books" and i % 8 == 2 else "cc-by-sa")
    return write_docs(tmp_path / "in", texts, shards=3, extra={"source": sources, "licence": licences})


POLICY = {"deny": ["forum"], "licenceField": "licence", "deniedLicences": ["proprietary"],
          "sources": {"web": {"maxDocs": 40, "weight": 0.5}, "wiki": {"weight": 2.0}}}


def run(tmp_path: Path, out: str, parallelism: int = 1, stages: list | None = None, **params: object) -> dict:
    spec = make_spec(corpus(tmp_path) if not (tmp_path / "in").exists() else tmp_path / "in", tmp_path / out,
                     stages or [{"type": "source-policy", "params": {**POLICY, **params}}],
                     input={"path": str(tmp_path / "in"), "idField": "doc_id", "sourceField": "source"},
                     parallelism=parallelism)
    return run_all(spec)


def test_rules_caps_weights_and_accounting(tmp_path: Path) -> None:
    corpus(tmp_path)
    summary = run(tmp_path, "out")
    stage = next(s for s in summary["stages"] if s["name"] == "source-policy")
    assert stage["removed"] == {"source:cap": 35, "source:denied": 75, "source:licence": 38}
    kept = output_rows(tmp_path / "out")
    by_source = Counter(r["source"] for r in kept)
    assert by_source == {"wiki": 75, "web": 40, "books": 37}
    assert {r["source"]: r["source_weight"] for r in kept} == {"wiki": 2.0, "web": 0.5, "books": 1.0}
    table = stage["extra"]["sources"]
    assert table["web"]["input_docs"] == 75 and table["web"]["kept_docs"] == 40
    assert table["web"]["removed_here"] == {"source:cap": 35} and table["forum"]["loss"] == 1.0
    assert table["books"]["removed_here"] == {"source:licence": 38}
    assert abs(sum(stage["extra"]["mixture"].values()) - 1.0) < 1e-3 and "forum" not in {
        s for s, v in stage["extra"]["mixture"].items() if v}


def test_caps_choose_the_same_documents_at_any_parallelism(tmp_path: Path) -> None:
    corpus(tmp_path)
    run(tmp_path, "one", parallelism=1)
    run(tmp_path, "three", parallelism=3)
    ids = [sorted(r["doc_id"] for r in output_rows(tmp_path / name)) for name in ("one", "three")]
    assert ids[0] == ids[1]


def test_accounting_names_the_stages_before(tmp_path: Path) -> None:
    """An exact-dedup before the policy: its removals show per source."""
    texts = [f"unique text {i}" for i in range(20)] + ["the same text"] * 10
    write_docs(tmp_path / "in", texts, shards=2, extra={"source": ["a"] * 20 + ["b"] * 10})
    summary = run(tmp_path, "out", stages=[{"type": "exact-dedup"}, {"type": "source-policy"}])
    table = next(s for s in summary["stages"] if s["name"] == "source-policy")["extra"]["sources"]
    assert table["b"]["removed_before"] == {"exact-dedup": 9} and table["b"]["kept_docs"] == 1
    assert table["a"]["loss"] == 0.0 and table["b"]["loss"] == 0.9
    report = (tmp_path / "out" / "report.html").read_text()
    section = report[report.index("source-policy: documents per source"):]
    assert "<th>exact-dedup</th>" in section
    assert "<tr><td>b</td><td>10</td><td>9</td><td>1</td><td>90.0%</td><td>1</td></tr>" in section


def test_max_source_loss_fails_the_run_with_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = [f"unique text {i}" for i in range(20)] + ["the same text"] * 10
    inp = write_docs(tmp_path / "in", texts, shards=2, extra={"source": ["a"] * 20 + ["b"] * 10})
    spec = make_spec(inp, tmp_path / "out", [{"type": "exact-dedup"},
                                             {"type": "source-policy", "params": {"maxSourceLoss": 0.5}}],
                     input={"path": str(inp), "idField": "doc_id", "sourceField": "source"})
    with pytest.raises(SourceLossError, match=r"source 'b' lost 90.0% of its documents \(10 in -> 1 kept; "
                                              r"removed by exact-dedup 9\); maxSourceLoss is 50.0%"):
        run_all(spec)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True) | {"output": {"path": str(tmp_path / "o2")}}))
    assert main(["run", "--quiet", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: stage source-policy: source 'b' lost 90.0%") and len(err.splitlines()) == 1
    assert not (tmp_path / "o2" / "summary.json").exists()


def test_source_from_path(tmp_path: Path) -> None:
    for folder, n in (("crawl-2024", 3), ("books", 2)):
        (tmp_path / "in" / folder).mkdir(parents=True)
        pq.write_table(pa.table({"doc_id": [f"{folder}-{i}" for i in range(n)], "text": [f"t {i}" for i in range(n)]}),
                       tmp_path / "in" / folder / "part.parquet")
    spec = make_spec(tmp_path / "in", tmp_path / "out", [{"type": "source-policy", "params": {"deny": ["books"]}}],
                     input={"path": str(tmp_path / "in"), "idField": "doc_id", "sourceFromPath": "^([^/]+)/"})
    run_all(spec)
    assert sorted(r["source"] for r in output_rows(tmp_path / "out")) == ["crawl-2024"] * 3
    assert Counter(r["reason"] for r in output_rows(tmp_path / "out", "rejected")) == {"source:denied": 2}


def test_missing_source_field_is_one_line_at_preflight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = write_docs(tmp_path / "in", ["a text", "b text"])
    spec = make_spec(inp, tmp_path / "out", [{"type": "source-policy"}],
                     input={"path": str(inp), "idField": "doc_id", "sourceField": "origin"})
    job = tmp_path / "job.json"
    job.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    assert main(["validate", "--check-data", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no source column 'origin' (columns: doc_id, text); set input.sourceField" in err
    assert len(err.splitlines()) == 1
    spec = make_spec(inp, tmp_path / "out", [{"type": "source-policy"}])
    job.write_text(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    assert main(["validate", "--check-data", str(job)]) == 2
    assert "source-policy: no source column; set input.sourceField" in capsys.readouterr().err


def test_rule_order_and_cutoffs() -> None:
    params = SourcePolicyParams(allow=["a", "b"], deny=["c"], missing_source="reject", licence_field="l",
                                allowed_licences=["mit"])
    got = rule_reasons(["a", "b", "c", "d", None, "a"], ["mit", "gpl", "mit", "mit", "mit", None], params)
    assert got == [None, "source:licence", "source:denied", "source:not-allowed", "source:missing", "source:licence"]
    bins, docs, nbytes = np.array([5, 1, 9]), np.array([2, 3, 4]), np.array([10, 10, 10])
    assert cutoff_bin(bins, docs, nbytes, 5, None) == 9  # bins 1 and 5: 5 documents
    assert cutoff_bin(bins, docs, nbytes, None, 15) == 5
    assert cutoff_bin(bins, docs, nbytes, 100, None) == 1 << 16
