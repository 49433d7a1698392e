from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curation.models.generation import SamplingConfig, TransformersBackend, chat_prompt
from curation.models.sample_models import GENERATOR
from curation.params.model_stages import RephraseParams
from curation.stages.rephrase import chunk_text, degenerate_reason, plan_rephrasings, repetition_fraction
from tests.helpers import make_spec, output_rows, run_all, write_docs
from tests.model.corpus import PROSE

pytestmark = pytest.mark.model


def test_plan_rephrasings_follows_the_ratio_and_rotates_styles() -> None:
    ids = [f"d{i}" for i in range(400)]
    texts = ["some text"] * 400
    half = plan_rephrasings(ids, texts, ["wikipedia", "qa"], 0.5, seed=0)
    assert 160 < len(half) < 240
    assert {r.style for r in half} == {"wikipedia", "qa"}
    double = plan_rephrasings(ids[:10], texts[:10], ["wikipedia", "qa"], 2.0, seed=0)
    assert len(double) == 20 and len({r.synthetic_id for r in double}) == 20
    assert all({r.style for r in double if r.row == row} == {"wikipedia", "qa"} for row in range(10))
    assert plan_rephrasings(ids, texts, ["qa"], 0.5, seed=0) != plan_rephrasings(
        ids, texts, ["qa"], 0.5, seed=1
    )
    assert plan_rephrasings(["a", "b"], ["", "text"], ["qa"], 1.0, seed=0)[0].synthetic_id == "b#syn-qa"


def test_guards_reject_degenerate_generations() -> None:
    p = RephraseParams()
    source = "The children played football in the park until it started to rain in the afternoon."
    assert degenerate_reason("", source, p) == "empty"
    assert degenerate_reason(source.upper(), source, p) == "copy"
    assert degenerate_reason("Kids played.", source, p) == "too-short"
    assert degenerate_reason(" ".join(["word"] * 200), source, p) == "too-long"
    assert degenerate_reason("the ball went in " * 8, source, p) == "repeated"
    assert (
        degenerate_reason("Until the rain began, the children were playing football in the park.", source, p)
        is None
    )
    assert repetition_fraction(["a", "b", "c", "a", "b", "c", "a", "b", "c"]) > 0.5


def test_chunk_text_splits_long_documents_on_word_boundaries(causal_lm: Any) -> None:
    text = " ".join(PROSE * 3)
    chunks = chunk_text(text, causal_lm.tokenizer, chunk_tokens=24)
    assert len(chunks) > 3
    assert " ".join(chunks).split() == text.split()
    assert chunk_text("short text", causal_lm.tokenizer, 24) == ["short text"]


def test_transformers_backend_uses_the_chat_template_and_stops_at_eos(causal_lm: Any) -> None:
    backend = TransformersBackend(causal_lm)
    prompt = chat_prompt(backend.tokenizer, "Say hello.")
    assert "<|im_start|>user" in prompt and prompt.rstrip().endswith("assistant")
    out = backend.generate(
        [prompt, chat_prompt(backend.tokenizer, "Name a colour.")], SamplingConfig(max_new_tokens=12)
    )
    assert len(out) == 2 and all(g.text and g.new_tokens <= 12 for g in out)


def test_rephrase_adds_linked_synthetic_rows_that_differ_from_their_source(
    tmp_path: Path, models_dir: Path
) -> None:
    docs = PROSE[:4]
    inp = write_docs(tmp_path / "in", docs, shards=2)
    stage = {
        "type": "rephrase",
        "params": {
            "model": GENERATOR,
            "ratio": 1.0,
            "maxNewTokens": 40,
            "batchSize": 4,
            "styles": ["wikipedia", "qa"],
        },
    }
    summary = run_all(make_spec(inp, tmp_path / "out", [stage], models={"path": str(models_dir)}))

    rows = output_rows(tmp_path / "out")
    real = [r for r in rows if not r["synthetic"]]
    synthetic = [r for r in rows if r["synthetic"]]
    rejected = output_rows(tmp_path / "out", "rejected") if (tmp_path / "out" / "rejected").exists() else []
    assert sorted(r["text"] for r in real) == sorted(docs)
    assert all(r["synthetic_source_id"] is None for r in real)
    assert len(synthetic) + len(rejected) == len(docs)  # ratio 1: one rephrasing per document
    assert synthetic, "the sample model rephrases at least one of four plain sentences"
    source_text = {r["doc_id"]: r["text"] for r in real}
    for row in synthetic:
        assert row["doc_id"] == f"{row['synthetic_source_id']}#syn-{row['synthetic_style']}"
        assert row["text"] and row["text"] != source_text[row["synthetic_source_id"]]
    assert all(r["reason"].startswith("rephrase:") and r["synthetic_source_id"] for r in rejected)
    stage_stats = summary["stages"][1]
    assert stage_stats["generated"] == len(synthetic) and stage_stats["docs_out"] == len(docs)
    totals = summary["totals"]
    assert summary["conservation"]["holds"] and totals["synthetic_docs"] == len(synthetic)
    assert totals["synthetic_docs"] + totals["synthetic_rejected"] == len(docs)
