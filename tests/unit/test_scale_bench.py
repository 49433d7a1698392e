"""The scale benchmark's corpus generator (bench/scale_corpus.py): determinism, ground truth, schema.

The driver (bench/scale.py run) is not exercised here: it runs the whole pipeline, which changes.
"""

from __future__ import annotations

import importlib.util
import json
import re
import string
import sys
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = 2000


def _load() -> ModuleType:
    # bench/ is not a package; load the file as a module (registered, so dataclasses resolve it).
    spec = importlib.util.spec_from_file_location("scale_corpus", REPO / "bench" / "scale_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_corpus"] = module
    spec.loader.exec_module(module)
    return module


sc = _load()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    sc.generate(out, DOCS, seed=7, files=2, workers=1)
    return out


@pytest.fixture(scope="module")
def texts(corpus: Path) -> dict[str, str]:
    table = pq.read_table([str(p) for p in sorted(corpus.glob("part-*.parquet"))])
    return dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist(), strict=True))


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Word n-grams as Thresher's MinHash sees them: lowercased, punctuation as separators."""
    words = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation))).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_schema_layout_and_manifest(corpus: Path, texts: dict[str, str]) -> None:
    parts = sorted(p.name for p in corpus.iterdir() if not p.name.startswith(("_", ".")))
    assert parts == ["part-00000.parquet", "part-00001.parquet"]  # truth and manifest are hidden
    schema = pq.read_schema(corpus / parts[0])
    assert [(f.name, f.type) for f in schema] == [("doc_id", pa.string()), ("text", pa.string()),
                                                  ("source", pa.string())]
    assert list(texts) == [f"d{i:09d}" for i in range(DOCS)]
    manifest = json.loads((corpus / "_corpus.json").read_text())
    assert manifest["params"] == {"docs": DOCS, "seed": 7, "files": 2, "version": sc.GENERATOR_VERSION}
    assert manifest["stats"]["docs"] == DOCS
    assert manifest["stats"]["text_bytes"] == sum(len(t.encode()) for t in texts.values())
    dups, junk = sc.read_truth(corpus)
    assert dups.schema == sc.DUPS_SCHEMA and junk.schema == sc.JUNK_SCHEMA
    # Shares near the planted rates (2,000 draws: +-0.4% standard deviation).
    kinds = dups.column("kind").to_pylist()
    assert 0.015 < kinds.count("exact") / DOCS < 0.045
    assert 0.015 < kinds.count("near") / DOCS < 0.045
    assert 0.008 < junk.num_rows / DOCS < 0.035
    assert set(junk.column("junk").to_pylist()) <= set(sc.JUNK_KINDS)


def test_deterministic_and_prefix_stable(corpus: Path) -> None:
    a = sc.generate_chunk(0, 600, seed=7)
    b = sc.generate_chunk(0, 600, seed=7)
    assert a.docs.equals(b.docs) and a.dups.equals(b.dups) and a.junk.equals(b.junk)
    assert not sc.generate_chunk(0, 600, seed=8).docs.column("text").equals(a.docs.column("text"))
    # Documents are a function of (seed, index): a chunk boundary or a file split changes nothing.
    first = pq.read_table(corpus / "part-00000.parquet").slice(0, 600)
    assert first.equals(a.docs)
    late = sc.generate_chunk(1500, 1600, seed=7).docs
    assert late.equals(pq.read_table(corpus / "part-00001.parquet").slice(500, 100))


def test_exact_copies_equal_their_original(corpus: Path, texts: dict[str, str]) -> None:
    dups, _ = sc.read_truth(corpus)
    exact = [r for r in dups.to_pylist() if r["kind"] == "exact"]
    assert {r["variant"] for r in exact} <= set(sc.EXACT_VARIANTS) and exact
    for r in exact:
        copy, orig = texts[r["doc_id"]], texts[r["original_id"]]
        assert int(r["original_id"][1:]) < int(r["doc_id"][1:])
        assert r["jaccard"] == 1.0
        if r["variant"] == "verbatim":
            assert copy == orig
        else:
            assert copy != orig
        # Equal under exact-dedup's `normalize: full` (here: lowercase, whitespace runs collapsed).
        assert " ".join(copy.lower().split()) == " ".join(orig.lower().split())


def test_near_copies_have_the_jaccard_the_truth_says(corpus: Path, texts: dict[str, str]) -> None:
    dups, _ = sc.read_truth(corpus)
    near = [r for r in dups.to_pylist() if r["kind"] == "near"]
    assert near
    for r in near:
        a, b = shingles(texts[r["doc_id"]]), shingles(texts[r["original_id"]])
        true_j = len(a & b) / len(a | b)
        assert abs(true_j - r["jaccard"]) < 0.01, r
        assert 0.35 < r["jaccard"] < 1.0  # targets are uniform in [0.5, 1); small documents scatter
    js = sorted(r["jaccard"] for r in near)
    assert js[len(js) // 2] == pytest.approx(0.75, abs=0.08)  # spread over the range, not bunched


def test_originals_are_clean_and_clean_text_looks_like_prose(corpus: Path, texts: dict[str, str]) -> None:
    dups, junk = sc.read_truth(corpus)
    copies = set(dups.column("doc_id").to_pylist())
    junk_ids = set(junk.column("doc_id").to_pylist())
    assert not set(dups.column("original_id").to_pylist()) & (copies | junk_ids)
    clean = [t for i, t in texts.items() if i not in copies | junk_ids]
    words = [len(t.split()) for t in clean]
    assert min(words) >= sc.LEN_MIN and 350 < sum(words) / len(words) < 560
    mean_bytes = sum(len(t.encode()) for t in clean) / len(clean)
    assert 2200 < mean_bytes < 3500
    for t in clean[:50]:
        assert t[0].isupper() and t.endswith(".") and t == t.strip()
        assert len(re.findall(r"[.!?](?:\s|$)", t)) >= 3  # sentences
        assert {"the", "of", "and"} & set(t.lower().split())  # stop words for Gopher's rule
