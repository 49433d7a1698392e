"""decontaminate: planted benchmark leaks in long documents are found; the sample stays clean."""

from __future__ import annotations

import importlib
import inspect
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import ModelNotFoundError, SpecError
from curation.params.decontaminate import DecontaminateParams
from curation.stages import preflight_stages
from curation.stages.decontaminate import build_index, ngram_hashes, original_tokens, redact_matches
from tests.helpers import make_spec, output_rows, run_all, write_docs

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "sample"
MODULES = ("json", "argparse", "collections", "functools", "itertools", "pathlib", "subprocess", "threading",
           "asyncio", "logging", "re", "datetime", "unittest", "dataclasses", "enum", "csv", "sqlite3",
           "shutil", "tarfile", "zipfile", "socket", "string", "textwrap", "heapq", "bisect", "random", "decimal")


def stdlib_paragraphs(min_words: int = 30) -> list[str]:
    """English technical prose from the standard library's docstrings (present wherever Python is)."""
    out = set()
    for name in MODULES:
        module = importlib.import_module(name)
        for obj in [module, *(v for _, v in inspect.getmembers(module))]:
            doc = inspect.getdoc(obj)
            if doc and getattr(obj, "__module__", name) == name:
                out.update(p for p in doc.split("\n\n") if len(p.split()) >= min_words)
    return sorted(out)


def sample_texts(n: int) -> list[str]:
    texts = pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist()
    return [t for t in texts if len(t.split()) > 400][:n]


def benchmark_folder(models: Path, questions: list[str]) -> None:
    """Three sets in three formats: JSON lines (question + choices), Parquet, plain text."""
    (models / "bench" / "qa").mkdir(parents=True)
    with (models / "bench" / "qa" / "test.jsonl").open("w") as f:
        for i, q in enumerate(questions[:20]):
            words = q.split()
            f.write(json.dumps({"id": i, "question": " ".join(words[: len(words) // 2]),
                                "choices": [" ".join(words[len(words) // 2 :]), "no"], "answer": 0}) + "\n")
    pq.write_table(pa.table({"passage": questions[20:40], "label": list(range(20))}), models / "bench" / "read.parquet")
    (models / "bench" / "cloze.txt").write_text("\n\n".join(questions[40:60]))


def plant(doc: str, leak: str, rng: random.Random) -> str:
    """The leak (upper-cased, punctuation changed: normalisation must not matter) in the middle
    of a long document."""
    words = doc.split(" ")
    cut = len(words) // 2 + rng.randint(-50, 50)
    noisy = leak.upper().replace(",", " ;").replace(".", " !")
    return " ".join(words[:cut]) + " " + noisy + " " + " ".join(words[cut:])


@pytest.fixture(scope="module")
def questions() -> list[str]:
    paragraphs = stdlib_paragraphs()
    random.Random(1).shuffle(paragraphs)
    return paragraphs[:60]


def spec_for(tmp_path: Path, models: Path, inp: Path, **params: object) -> object:
    benchmarks = [{"name": "qa", "path": "bench/qa", "fields": ["question", "choices"]},
                  {"name": "read", "path": "bench/read.parquet", "fields": ["passage"]},
                  {"name": "cloze", "path": "bench/cloze.txt"}]
    return make_spec(inp, tmp_path / "out", [{"type": "decontaminate", "params": {"benchmarks": benchmarks, **params}}],
                     models={"path": str(models)})


def test_planted_leaks_are_all_found_and_named(tmp_path: Path, questions: list[str]) -> None:
    models = tmp_path / "models"
    benchmark_folder(models, questions)
    rng = random.Random(0)
    clean = sample_texts(120)
    # 15 leaks per set: a JSON question (its first half: the `question` field), a Parquet passage,
    # a text passage; each inside a long real document. 75 documents stay clean.
    leaks = [(" ".join(q.split()[: len(q.split()) // 2]), "qa") for q in questions[:15]]
    leaks += [(q, "read") for q in questions[20:35]] + [(q, "cloze") for q in questions[40:55]]
    texts = [plant(clean[i], leak, rng) for i, (leak, _) in enumerate(leaks)] + clean[len(leaks):]
    inp = write_docs(tmp_path / "in", texts)
    summary = run_all(spec_for(tmp_path, models, inp))
    rejected = {r["doc_id"]: r["reason"] for r in output_rows(tmp_path / "out", "rejected")}
    expected = {f"d{i:05d}": f"decontaminate:{name}" for i, (_, name) in enumerate(leaks)}
    assert rejected == expected  # recall 45/45, no false positive among the 75 clean documents
    stage = next(s for s in summary["stages"] if s["name"] == "decontaminate")
    assert stage["extra"]["contaminated_docs"] == {"qa": 15, "read": 15, "cloze": 15}
    assert stage["extra"]["benchmarks"]["qa"]["records"] == 20
    kept = output_rows(tmp_path / "out")
    assert all(r["benchmark_ngrams"] == 0 for r in kept)


def test_redact_replaces_only_the_leaked_span(tmp_path: Path, questions: list[str]) -> None:
    models = tmp_path / "models"
    benchmark_folder(models, questions)
    doc = "Intro words that are ours. " + questions[45] + " Closing words that are ours too."
    inp = write_docs(tmp_path / "in", [doc, "unrelated short text"], shards=1)
    run_all(spec_for(tmp_path, models, inp, action="redact", placeholder="[EVAL]"))
    rows = {r["doc_id"]: r for r in output_rows(tmp_path / "out")}
    tokens = original_tokens(questions[45])
    leaked = questions[45][tokens[0][0] : tokens[-1][1]]  # first word to last word
    assert rows["d00000"]["text"] == doc.replace(leaked, "[EVAL]")
    assert rows["d00000"]["benchmark_ngrams"] > 0 and rows["d00001"]["text"] == "unrelated short text"


def test_redaction_maps_back_to_the_original_text() -> None:
    bench = "the quick brown fox jumps over the lazy dog near the old river bank today"
    index = np.unique(ngram_hashes(pa.array([bench]), 13)[0])
    text = "Before. THE QUICK BROWN FOX — jumps over the lazy dog, near the old river bank! After."
    new, spans = redact_matches(text, index, 13, "<B>")
    assert (new, spans) == ("Before. <B>! After.", 1)


def test_no_false_positive_on_the_bundled_sample(questions: list[str]) -> None:
    """Standard-library docstrings as the benchmark: same genre (Python documentation) as the sample."""
    paragraphs = stdlib_paragraphs(min_words=13)
    index = np.unique(ngram_hashes(pa.array(paragraphs), 13)[0])
    texts = pq.read_table(SAMPLE, columns=["text"]).column("text").combine_chunks()
    h, doc = ngram_hashes(texts, 13)
    pos = np.minimum(np.searchsorted(index, h), len(index) - 1)
    matched = Counter(doc[index[pos] == h].tolist())
    assert len(paragraphs) > 300 and len(index) > 10_000
    # Measured: 3 of 4,152 documents share a 13-gram, each a real overlap, no hash collision: two
    # quote shutil.copytree's docstring (Sphinx's docs, and a planted near-duplicate of that page),
    # one carries the BSD licence disclaimer that a standard-library docstring quotes too.
    assert len(matched) <= 3
    for d in matched:
        text = texts[d].as_py().lower()
        assert "symbolic links in the source tree" in " ".join(text.split()) or "merchantability" in text


def test_bad_benchmarks_fail_at_preflight(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    inp = write_docs(tmp_path / "in", ["a"])
    with pytest.raises(ModelNotFoundError, match="benchmark 'qa' not found at .*bench/qa"):
        preflight_stages(spec_for(tmp_path, models, inp))
    (models / "q.jsonl").write_text('{"prompt": "x"}\n{"prompt": "y"}\n')
    spec = make_spec(inp, tmp_path / "out", [{"type": "decontaminate", "name": "decon", "params": {
        "benchmarks": [{"name": "q", "path": "q.jsonl", "fields": ["question"]}]}}], models={"path": str(models)})
    with pytest.raises(SpecError, match=r"q.jsonl: no record has a text value in the fields question "
                                        r"\(fields found: prompt\)"):
        preflight_stages(spec)
    params = DecontaminateParams.model_validate({"benchmarks": [{"name": "q", "path": "q.jsonl", "fields": ["prompt"]}]})
    with pytest.raises(SpecError, match="has no value of 13 or more words"):
        build_index(models, params, "stage decon.params")
