"""The curriculum stage: score → global order → ordered shards plus a mixture manifest."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.errors import SpecError
from curation.params.curriculum import CurriculumParams
from curation.stages.curriculum import (
    POSITION_COLUMN,
    SIGNAL_COLUMN,
    compression_ratios,
    curriculum_order,
    quantile_buckets,
    tiebreak_hashes,
)
from tests.helpers import make_spec, output_rows, run_all, write_docs

TEXTS = [("word " * (1 + (i * 7) % 23)).strip() + "." for i in range(23)]  # lengths all distinct


def run_curriculum(
    tmp_path: Path,
    name: str,
    texts: list[str] | None = None,
    parallelism: int = 1,
    shards: int = 3,
    extra: dict[str, list[Any]] | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    texts = TEXTS if texts is None else texts
    inp = tmp_path / f"{name}-in"
    if not inp.exists():
        write_docs(inp, texts, shards=shards, extra=extra)
    spec = make_spec(
        inp, tmp_path / name, [{"type": "curriculum", "params": params}], parallelism=parallelism
    )
    run_all(spec)
    return output_rows(tmp_path / name)


def signals(rows: list[dict[str, Any]]) -> list[float]:
    return [r[SIGNAL_COLUMN] for r in rows]


# ---- pure functions ------------------------------------------------------------------------


def _arrays(signal: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(signal)
    keys = np.arange(n, dtype=np.uint64)
    return np.array(signal, dtype=np.float64), tiebreak_hashes([f"d{i}" for i in range(n)], 0), keys


def test_ascending_and_descending_sort_by_signal_with_missing_last() -> None:
    sig, tb, keys = _arrays([3.0, 1.0, float("nan"), 2.0, 5.0])
    bucket = quantile_buckets(sig, tb, keys, 2)
    asc = curriculum_order(sig, tb, keys, CurriculumParams(order="ascending"), bucket)
    desc = curriculum_order(sig, tb, keys, CurriculumParams(order="descending"), bucket)
    assert asc.tolist() == [1, 3, 0, 4, 2]
    assert desc.tolist() == [4, 0, 3, 1, 2]


def test_quantile_buckets_have_equal_counts_by_rank() -> None:
    sig, tb, keys = _arrays([float(x) for x in range(10)])
    assert quantile_buckets(sig, tb, keys, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


def test_interleaved_deals_one_document_per_bucket_from_easiest_to_hardest() -> None:
    sig, tb, keys = _arrays([float(x) for x in range(12)])
    bucket = quantile_buckets(sig, tb, keys, 3)
    order = curriculum_order(sig, tb, keys, CurriculumParams(order="interleaved", buckets=3), bucket)
    assert sorted(order.tolist()) == list(range(12))
    assert bucket[order].tolist() == [0, 1, 2] * 4


def test_ties_are_broken_by_seeded_hash_of_the_id() -> None:
    ids = [f"doc-{i}" for i in range(50)]
    sig, keys = np.zeros(50), np.arange(50, dtype=np.uint64)
    p = CurriculumParams()
    orders = [
        curriculum_order(sig, tiebreak_hashes(ids, seed), keys, p, np.zeros(50, dtype=np.int64)).tolist()
        for seed in (1, 1, 2)
    ]
    assert orders[0] == orders[1]
    assert orders[0] != orders[2]


def test_compression_ratio_is_low_for_repetitive_text() -> None:
    repetitive = "abc " * 200
    varied = " ".join(str(i * 7919 % 10007) for i in range(160))
    ratios = compression_ratios([repetitive, varied, ""])
    assert ratios[0] < 0.1 < ratios[1]
    assert ratios[2] == 0.0


# ---- end to end ----------------------------------------------------------------------------


def test_ascending_length_order_and_positions(tmp_path: Path) -> None:
    rows = run_curriculum(tmp_path, "asc", order="ascending", rowsPerShard=5)
    assert signals(rows) == sorted(len(t) for t in TEXTS)
    assert [r[POSITION_COLUMN] for r in rows] == list(range(len(TEXTS)))
    assert all(len(r["text"]) == r[SIGNAL_COLUMN] for r in rows)
    shards = sorted((tmp_path / "asc" / "data").glob("part-*.parquet"))
    assert len(shards) == math.ceil(len(TEXTS) / 5)


def test_descending_words_order(tmp_path: Path) -> None:
    rows = run_curriculum(tmp_path, "desc", order="descending", signal="words")
    assert signals(rows) == sorted((len(t.split()) for t in TEXTS), reverse=True)


def test_compression_ratio_signal_end_to_end(tmp_path: Path) -> None:
    texts = ["abc " * 50, " ".join(str(i * 7919 % 10007) for i in range(60)), "The cat sat on the mat. " * 3]
    rows = run_curriculum(tmp_path, "zlib", texts=texts, signal="compression_ratio")
    assert signals(rows) == sorted(compression_ratios(texts).tolist())
    assert rows[0]["text"] == texts[0]


def test_interleaved_output_mixes_buckets_in_every_shard(tmp_path: Path) -> None:
    texts = [("word " * n).strip() for n in range(1, 25)]
    rows = run_curriculum(tmp_path, "inter", texts=texts, order="interleaved", buckets=4, rowsPerShard=8)
    ranks = {v: i for i, v in enumerate(sorted(signals(rows)))}
    buckets = [ranks[s] * 4 // len(rows) for s in signals(rows)]
    assert buckets == [0, 1, 2, 3] * 6
    mixture = json.loads((tmp_path / "inter" / "data" / "_mixture.json").read_text())
    assert [b["docs"] for b in mixture["buckets"]] == [6, 6, 6, 6]
    assert [s["rows"] for s in mixture["shards"]] == [8, 8, 8]
    assert mixture["shards"][0]["signal"]["min"] <= mixture["shards"][0]["signal"]["max"]


def test_order_is_identical_across_world_sizes_and_conserves_documents(tmp_path: Path) -> None:
    texts = ["same length."] * 10 + TEXTS  # ties exercise the seeded tie-break
    one = run_curriculum(tmp_path, "ws1", texts=texts, parallelism=1, rowsPerShard=4, seed=3)
    three = run_curriculum(tmp_path, "ws3", texts=texts, parallelism=3, rowsPerShard=4, seed=3)
    assert one == three
    assert sorted(r["doc_id"] for r in one) == [f"d{i:05d}" for i in range(len(texts))]
    assert output_rows(tmp_path / "ws3", "rejected") == []


def test_fixed_seed_gives_identical_order_and_seed_changes_ties(tmp_path: Path) -> None:
    texts = ["same length."] * 20
    a = run_curriculum(tmp_path, "a", texts=texts, seed=1)
    b = run_curriculum(tmp_path, "b", texts=texts, seed=1)
    c = run_curriculum(tmp_path, "c", texts=texts, seed=2)
    ids = [[r["doc_id"] for r in rows] for rows in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


def test_existing_numeric_column_is_used_and_missing_values_go_last(tmp_path: Path) -> None:
    scores = [0.5, None, 0.1, 0.9, 0.3]
    rows = run_curriculum(
        tmp_path,
        "col",
        texts=TEXTS[:5],
        extra={"quality_score": scores},
        signal="quality_score",
        order="descending",
    )
    assert [r["quality_score"] for r in rows] == [0.9, 0.5, 0.3, 0.1, None]
    assert math.isnan(rows[-1][SIGNAL_COLUMN])


def test_unknown_signal_column_names_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"no column 'perplexity'.*numeric columns: quality_score.*length, words"
    ):
        run_curriculum(
            tmp_path, "bad", texts=TEXTS[:4], extra={"quality_score": [1, 2, 3, 4]}, signal="perplexity"
        )


def test_text_column_is_not_a_numeric_signal(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="must be numeric"):
        run_curriculum(tmp_path, "txt", texts=TEXTS[:4], signal="text")


def test_empty_input_writes_one_empty_shard(tmp_path: Path, fake_filter: str) -> None:
    inp = write_docs(tmp_path / "in", ["tiny", "x"], shards=2)
    spec = make_spec(inp, tmp_path / "out", [{"type": fake_filter}, {"type": "curriculum"}])
    summary = run_all(spec)
    assert output_rows(tmp_path / "out") == []
    assert summary["conservation"]["holds"] is True
    stage = next(s for s in summary["stages"] if s["type"] == "curriculum")
    assert stage["docs_in"] == stage["docs_out"] == 0


def test_stage_statistics_report_buckets_and_shards(tmp_path: Path) -> None:
    inp = write_docs(tmp_path / "in", TEXTS, shards=2)
    spec = make_spec(
        inp, tmp_path / "out", [{"type": "curriculum", "params": {"rowsPerShard": 10}}], parallelism=2
    )
    summary = run_all(spec)
    stage = next(s for s in summary["stages"] if s["type"] == "curriculum")
    assert stage["docs_in"] == stage["docs_out"] == len(TEXTS)
    extra = stage["extra"]["curriculum"]
    assert extra["docs"] == len(TEXTS) and extra["output_shards"] == 3
    assert sum(extra["bucket_docs"]) == len(TEXTS)
    assert len(json.dumps(stage["extra"])) < 1024
