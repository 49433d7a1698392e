"""The heuristic filter: Gopher quality, Gopher repetition, C4 and FineWeb rules."""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import heapq
import inspect
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import unicodedata
import unittest
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.params.heuristic import HeuristicFilterParams
from curation.stages.heuristic import evaluate, evaluate_column
from curation.stages.heuristic_rules import (
    SENTENCE_END,
    TextBatch,
    c4_clean_lines,
    c4_measures,
    fineweb_measures,
    first_failures,
    gopher_quality_measures,
    gopher_repetition_measures,
)
from tests.helpers import make_spec, output_rows, run_all, write_docs

# Real human prose: documentation written by Python's developers (some contain short code).
PROSE = [
    inspect.getdoc(obj) or ""
    for obj in (
        argparse,
        subprocess.Popen,
        unittest.TestCase,
        textwrap.TextWrapper,
        heapq,
        copy,
        difflib.SequenceMatcher,
        os.walk,
        shutil.copytree,
    )
]
SENTENCE = "The committee reviewed the proposal and agreed that the plan should go ahead with the changes."
ALL_OFF: dict[str, Any] = {
    family: {"enabled": False} for family in ("gopherQuality", "gopherRepetition", "c4", "fineweb")
}


def only(family: str, **rules: Any) -> HeuristicFilterParams:
    """Params with one family enabled (and its rules overridden)."""
    doc = {**ALL_OFF, family: {"enabled": True, **rules}}
    return HeuristicFilterParams.model_validate(doc)


def reason(text: str, params: HeuristicFilterParams | None = None) -> str | None:
    return evaluate([text], params or HeuristicFilterParams())[0][0]


def prose(i: int = 0) -> str:
    """One real, clean document."""
    return PROSE[i % len(PROSE)]


# ---- the whole filter on real and typical bad documents -------------------------------------


def test_real_prose_passes_every_rule_family() -> None:
    reasons, _ = evaluate(PROSE, HeuristicFilterParams())
    assert reasons == [None] * len(PROSE)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("asdfghjkl qwertyuiop zxcvbnm " * 30, "gopher-quality:stop-words"),
        ("jjjjjjjjjjjjjjjjjjkkkkkk;;;;;;lllllll " * 80, "gopher-quality:max-mean-word-length"),
        ("\n".join(f"- item number {i} blue cotton shirt" for i in range(40)), "gopher-quality:bullet-lines"),
        (" ".join(f"#tag{i} and the #topic{i}" for i in range(40)), "gopher-quality:hash-ratio"),
        (
            " ".join(f"thinking about the {i} ... and wondering ..." for i in range(40)),
            "gopher-quality:ellipsis-ratio",
        ),
        ("!!! ??? 123 456 @@@ the of " * 30 + prose(), "gopher-quality:alpha-words"),
        ("Too short to be a real document.", "gopher-quality:min-words"),
        (prose() + ("\nBuy cheap tickets now and save money today." * 30), "gopher-repetition:dup-line-frac"),
        (prose() + " Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4:lorem-ipsum"),
        (prose() + " function f() { return 1; }", "c4:curly-bracket"),
    ],
    ids=[
        "keyboard-mash",
        "long-gibberish",
        "bullet-list",
        "hashtags",
        "ellipses",
        "symbols",
        "short",
        "repeated-lines",
        "lorem-ipsum",
        "curly-bracket",
    ],
)
def test_typical_bad_documents_are_rejected_with_the_rule_name(text: str, expected: str) -> None:
    assert reason(text) == expected


def test_reasons_are_first_failing_rule_in_documented_order() -> None:
    # Fails both min-words (quality) and lorem ipsum (c4): quality runs first.
    assert reason("Lorem ipsum dolor sit amet.") == "gopher-quality:min-words"
    assert reason("Lorem ipsum dolor sit amet.", only("c4")) == "c4:lorem-ipsum"
    assert first_failures(3, [("a:x", _arr([True, False, False])), ("b:y", _arr([True, True, False]))]) == [
        "a:x",
        "b:y",
        None,
    ]


def _arr(values: list[bool]) -> Any:
    return np.array(values, dtype=bool)


def test_disabled_family_does_nothing() -> None:
    lorem = prose() + " Lorem ipsum dolor sit amet."
    assert reason(lorem) == "c4:lorem-ipsum"
    assert reason(lorem, HeuristicFilterParams.model_validate({"c4": {"enabled": False}})) is None
    assert reason("x", HeuristicFilterParams.model_validate(ALL_OFF)) is None


def test_empty_and_whitespace_documents_are_rejected_not_crashing() -> None:
    reasons, _ = evaluate(["", "   \n\n  ", prose()], HeuristicFilterParams())
    assert reasons == ["gopher-quality:min-words", "gopher-quality:min-words", None]
    assert evaluate([], HeuristicFilterParams())[0] == []


# ---- Gopher quality ------------------------------------------------------------------------


def test_gopher_quality_measures_count_words_stop_words_and_lines() -> None:
    m = gopher_quality_measures(
        TextBatch(["The cat and the dog ... #x\n- a list line\n- second", ""]),
        HeuristicFilterParams().gopher_quality,
    )
    # words: The cat and the dog #x - a list line - second -> "..." and "-" are symbol-only
    assert m["words"].tolist() == [10, 0]
    assert m["stop_words"].tolist() == [3, 0]  # The, and, the (case-insensitive)
    assert m["bullet_line_frac"][0] == pytest.approx(2 / 3)
    assert m["hash_ratio"][0] == pytest.approx(1 / 10)


def test_min_words_threshold_is_inclusive_and_configurable() -> None:
    text = " ".join(["the", "of"] + ["word"] * 48)  # exactly 50 words
    assert reason(text, only("gopherQuality")) is None
    assert reason(text, only("gopherQuality", minWords=51)) == "gopher-quality:min-words"
    assert reason(text, only("gopherQuality", maxWords=49)) == "gopher-quality:max-words"


def test_stop_word_threshold_flips_the_decision() -> None:
    text = " ".join(["the", "of"] + ["word"] * 60)
    assert reason(text, only("gopherQuality")) is None
    assert reason(text, only("gopherQuality", minStopWords=3)) == "gopher-quality:stop-words"
    assert reason(text, only("gopherQuality", stopWords=["cat"])) == "gopher-quality:stop-words"


# ---- Gopher repetition ---------------------------------------------------------------------


def test_duplicate_line_fraction_at_threshold_is_kept() -> None:
    lines = [f"line {i} of the text says something new" for i in range(7)] + ["this repeats"] * 3
    text = "\n".join(lines)  # 10 lines, 2 repeat an earlier one: 0.2
    m = gopher_repetition_measures(TextBatch([text]), HeuristicFilterParams().gopher_repetition)
    assert m["dup_line_frac"][0] == pytest.approx(0.2)
    lines_only = {"maxDupLineCharFrac": 1.0, "maxTopNgramCharFrac": {}, "maxDupNgramCharFrac": {}}
    assert reason(text, only("gopherRepetition", maxDupLineFrac=0.2, **lines_only)) is None
    assert reason(text, only("gopherRepetition", maxDupLineFrac=0.19, **lines_only)) == (
        "gopher-repetition:dup-line-frac"
    )


def test_duplicate_paragraphs_are_caught() -> None:
    para = "A paragraph that someone pasted twice into the page by mistake."
    other = "\n".join(f"Line {i} of a long paragraph about the weather in the mountains." for i in range(12))
    text = "\n\n".join([para, other, para, para])  # 2 of 4 paragraphs repeat, but only 2 of 15 lines
    m = gopher_repetition_measures(TextBatch([text]), HeuristicFilterParams().gopher_repetition)
    assert m["dup_para_frac"][0] == pytest.approx(2 / 4)
    assert m["dup_line_frac"][0] == pytest.approx(2 / 15)
    assert reason(text, only("gopherRepetition")) == "gopher-repetition:dup-para-frac"


def test_repeated_ngrams_are_caught() -> None:
    spam = "best cheap hotel deals in town " * 30
    assert reason(prose(1) + " " + spam, only("gopherRepetition")).startswith("gopher-repetition:top-")
    rules = only("gopherRepetition", maxTopNgramCharFrac={}).gopher_repetition
    assert reason(prose(1) + " " + spam, only("gopherRepetition", maxTopNgramCharFrac={})) == (
        "gopher-repetition:dup-5gram-char-frac"
    )
    assert rules.max_dup_ngram_char_frac[10] == 0.10


def _naive_ngram_fractions(words: list[str], n: int) -> tuple[float, float]:
    """The definitions, written the slow obvious way."""
    total = sum(map(len, words))
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    repeated = [(c, sum(map(len, g))) for g, c in counts.items() if c >= 2]
    top = max(repeated, default=(0, 0))
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if g in seen:
            covered[i : i + n] = [True] * n
        seen.add(g)
    dup = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
    return (top[0] * top[1] / total if total else 0.0), (dup / total if total else 0.0)


def test_vectorised_ngram_fractions_match_the_definition() -> None:
    rng = random.Random(7)
    vocab = ["a", "bb", "ccc", "dddd", "the", "of", "x"]
    docs = [[rng.choice(vocab[: rng.randint(2, 7)]) for _ in range(rng.randint(0, 60))] for _ in range(40)]
    docs.append(["same", "words", "again"] * 10)
    rules = HeuristicFilterParams().gopher_repetition
    m = gopher_repetition_measures(TextBatch([" ".join(d) for d in docs]), rules)
    for i, words in enumerate(docs):
        for n in (2, 3, 4):
            assert m[f"top_{n}gram_char_frac"][i] == pytest.approx(_naive_ngram_fractions(words, n)[0]), (
                i,
                n,
            )
        for n in (5, 7, 10):
            assert m[f"dup_{n}gram_char_frac"][i] == pytest.approx(_naive_ngram_fractions(words, n)[1]), (
                i,
                n,
            )


# ---- C4 ------------------------------------------------------------------------------------


def test_c4_min_sentences_boundary() -> None:
    text = " ".join(f"Sentence number {i} ends here." for i in range(3))
    assert reason(text, only("c4")) is None
    assert reason(text, only("c4", minSentences=4)) == "c4:min-sentences"


def test_c4_bad_words_list_is_user_supplied() -> None:
    text = prose() + " That was a Darn good idea!"
    assert reason(text, only("c4")) is None
    assert reason(text, only("c4", badWords=["darn"])) == "c4:bad-word"
    assert reason(text, only("c4", badWords=["good idea"])) == "c4:bad-word"


def test_c4_line_removal_keeps_only_sentence_lines() -> None:
    text = (
        "Home | About | Contact\nThis line is a proper sentence.\nEnable JavaScript to view this site.\n"
        "We use cookies. Read our privacy policy.\nAnother line that is fine!"
    )
    cleaned = c4_clean_lines(TextBatch([text]), HeuristicFilterParams().c4)
    assert cleaned.text.to_pylist() == ["This line is a proper sentence.\nAnother line that is fine!"]
    assert cleaned.lines_removed.tolist() == [3]


def test_c4_line_removal_is_recorded_as_annotation() -> None:
    text = (
        "\n".join(f"Sentence {i} is on a line of its own." for i in range(6)) + "\nShare on Facebook\nClick"
    )
    reasons, cleaning = evaluate([text, "nothing useful here"], only("c4", lineRemoval="annotate"))
    assert reasons == [None, "c4:no-lines-left"]
    assert cleaning is not None
    assert cleaning.lines_removed.tolist() == [2, 1]
    assert cleaning.text.to_pylist()[0] == text.rsplit("\nShare", 1)[0]


# ---- FineWeb -------------------------------------------------------------------------------


def test_fineweb_rejects_navigation_menus_and_lists() -> None:
    menu = "\n".join(["Home", "Products", "About us", "Contact", "Login"] * 3 + [SENTENCE])
    assert reason(menu, only("fineweb")) == "fineweb:line-punct-ratio"
    short_lines = "\n".join([f"Item {i}." for i in range(10)] + [SENTENCE] * 2)
    assert reason(short_lines, only("fineweb", maxDupLineCharFrac=1.0)) == "fineweb:short-line-ratio"


def test_fineweb_measures_and_thresholds() -> None:
    lines = [f"Line {i} is a complete sentence that is long enough." for i in range(8)] + [
        "no stop",
        "no stop",
    ]
    text = "\n".join(lines)
    m = fineweb_measures(TextBatch([text]), HeuristicFilterParams().fineweb)
    assert m["line_punct_frac"][0] == pytest.approx(0.8)
    assert m["short_line_frac"][0] == pytest.approx(0.2)
    assert m["dup_line_char_frac"][0] == pytest.approx(len("no stop") / sum(map(len, lines)))
    assert reason(text, only("fineweb", maxDupLineCharFrac=0.1)) is None
    assert reason(text, only("fineweb", maxDupLineCharFrac=0.01)) == "fineweb:dup-line-char-frac"
    assert reason(text, only("fineweb", minLinePunctFrac=0.81)) == "fineweb:line-punct-ratio"
    assert reason(text, only("fineweb", maxNewlineWordRatio=0.05)) == "fineweb:list-ratio"


# ---- params --------------------------------------------------------------------------------


def test_defaults_are_the_published_thresholds() -> None:
    p = HeuristicFilterParams()
    assert (p.gopher_quality.min_words, p.gopher_quality.max_words) == (50, 100_000)
    assert p.gopher_quality.stop_words == ["the", "be", "to", "of", "and", "that", "have", "with"]
    assert p.gopher_repetition.max_top_ngram_char_frac == {2: 0.20, 3: 0.18, 4: 0.16}
    assert p.fineweb.min_line_punct_frac == 0.12 and p.fineweb.max_short_line_frac == 0.67
    assert p.c4.line_removal == "off"


def test_ngram_sizes_are_validated() -> None:
    with pytest.raises(ValueError, match="outside 1..32"):
        HeuristicFilterParams.model_validate({"gopherRepetition": {"maxDupNgramCharFrac": {"0": 0.1}}})


# ---- end to end ----------------------------------------------------------------------------


def test_stage_end_to_end_keeps_prose_and_records_reasons(tmp_path: Path) -> None:
    bad = ["Too short.", prose() + " Lorem ipsum dolor sit amet.", "\n".join(["Home", "Shop"] * 40)]
    texts = PROSE + bad
    spec = make_spec(
        write_docs(tmp_path / "in", texts, shards=3),
        tmp_path / "out",
        [{"type": "heuristic-filter"}],
        parallelism=2,
    )
    summary = run_all(spec)
    kept = {r["doc_id"] for r in output_rows(tmp_path / "out")}
    assert kept == {f"d{i:05d}" for i in range(len(PROSE))}
    rejected = {r["doc_id"]: r["reason"] for r in output_rows(tmp_path / "out", "rejected")}
    n = len(PROSE)
    assert rejected == {
        f"d{n:05d}": "gopher-quality:min-words",
        f"d{n + 1:05d}": "c4:lorem-ipsum",
        f"d{n + 2:05d}": "gopher-quality:stop-words",
    }
    stage = next(s for s in summary["stages"] if s["type"] == "heuristic-filter")
    assert stage["removed"] == {
        "gopher-quality:min-words": 1,
        "gopher-quality:stop-words": 1,
        "c4:lorem-ipsum": 1,
    }
    assert summary["conservation"]["holds"] is True
    assert set(output_rows(tmp_path / "out")[0]) == {"doc_id", "text"}


def unwrap(text: str) -> str:
    """One line per paragraph, as web pages usually come."""
    return "\n".join(" ".join(p.split()) for p in text.split("\n\n"))


def test_stage_replace_mode_rewrites_text_and_counts_removed_lines(tmp_path: Path) -> None:
    original = unwrap(prose(2)) + "\nShare on Facebook"
    spec = make_spec(
        write_docs(tmp_path / "in", [original], shards=1),
        tmp_path / "out",
        [{"type": "heuristic-filter", "params": {"c4": {"lineRemoval": "replace"}}}],
    )
    run_all(spec)
    [row] = output_rows(tmp_path / "out")
    lines = row["text"].split("\n")
    assert "Share on Facebook" not in row["text"]
    assert all(line.endswith((".", "!", "?", '"', "'")) for line in lines)
    assert row["c4_lines_removed"] == len(original.split("\n")) - len(lines) >= 1


def test_batched_evaluation_matches_one_batch() -> None:
    texts = [unwrap(p) + "\nShare on Facebook" for p in PROSE] + ["Too short.", ""]
    params = HeuristicFilterParams.model_validate({"c4": {"lineRemoval": "annotate"}})
    whole, whole_cleaning = evaluate(texts, params)
    column = pa.chunked_array([texts[:4], texts[4:]], pa.string())
    batched, batched_cleaning = evaluate_column(column, params, batch_rows=3)
    assert batched == whole
    assert whole_cleaning is not None and batched_cleaning is not None
    assert batched_cleaning.text.to_pylist() == whole_cleaning.text.to_pylist()
    assert batched_cleaning.lines_removed.tolist() == whole_cleaning.lines_removed.tolist()


def test_annotate_mode_end_to_end_with_an_empty_shard(tmp_path: Path) -> None:
    texts = [unwrap(prose(5)) + "\nShare on Facebook", "Too short."]
    (tmp_path / "in").mkdir()
    for i, part in enumerate([texts, []]):
        ids = [f"d{i}{j}" for j in range(len(part))]
        pq.write_table(
            pa.table({"doc_id": pa.array(ids, pa.string()), "text": pa.array(part, pa.string())}),
            tmp_path / "in" / f"input-{i}.parquet",
        )
    spec = make_spec(
        tmp_path / "in",
        tmp_path / "out",
        [{"type": "heuristic-filter", "params": {"c4": {"lineRemoval": "annotate"}}}],
        parallelism=2,
    )
    summary = run_all(spec)
    [row] = output_rows(tmp_path / "out")
    assert row["text"] == texts[0]
    assert row["c4_text"].split("\n")[-1] != "Share on Facebook" and row["c4_lines_removed"] >= 1
    assert summary["conservation"]["holds"] is True


# ---- the vectorised kernels against the definitions ----------------------------------------

SAMPLE = sorted((Path(__file__).resolve().parents[2] / "examples/data/sample").glob("*.parquet"))
# sha256 of json.dumps(sorted((doc_id, reason))) for the bundled sample with default params: the
# reasons of the implementation before the byte-level kernels (regular expressions per word).
SAMPLE_REASONS_SHA256 = "56596b508432405fc04756e286c18635e98163889e535bdd3777bd0423018b92"
TRIM = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—¿¡"


def test_bundled_sample_reasons_are_unchanged() -> None:
    table = pq.read_table(SAMPLE, columns=["doc_id", "text"])
    reasons, _ = evaluate_column(table.column("text"), HeuristicFilterParams())
    pairs = sorted(zip(table.column("doc_id").to_pylist(), reasons, strict=True))
    assert hashlib.sha256(json.dumps(pairs).encode()).hexdigest() == SAMPLE_REASONS_SHA256


def _is_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _reference_quality(text: str, stop_words: list[str]) -> dict[str, float]:
    """Gopher quality measures, written the slow obvious way."""
    words = text.split()
    real = [w for w in words if not all(map(_is_symbol, w))]
    lines = [line.strip() for line in text.split("\n") if line.strip()]

    def frac(num: float, den: float) -> float:
        return num / den if den else 0.0

    return {
        "words": len(real),
        "mean_word_length": frac(sum(map(len, real)), len(real)),
        "hash_ratio": frac(text.count("#"), len(real)),
        "ellipsis_ratio": frac(text.count("...") + text.count("…"), len(real)),
        "bullet_line_frac": frac(sum(line[0] in "•-*‣◦⁃●▪–" for line in lines), len(lines)),
        "ellipsis_line_frac": frac(sum(line.endswith(("...", "…")) for line in lines), len(lines)),
        "alpha_word_frac": frac(sum(any(unicodedata.category(c)[0] == "L" for c in w) for w in words), len(words)),
        "stop_words": sum(w.lower().strip(TRIM) in stop_words for w in words),
    }


def _reference_fineweb(text: str) -> dict[str, float]:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    seen: set[str] = set()
    dup_chars = 0
    for line in lines:
        dup_chars += len(line) if line in seen else 0
        seen.add(line)
    total = sum(map(len, lines))
    n = len(lines)
    return {
        "line_punct_frac": sum(line[-1] in ".'\"!?։؟۔।॥።፧。！．？｡" for line in lines) / n if n else 0.0,
        "short_line_frac": sum(len(line) < 30 for line in lines) / n if n else 0.0,
        "dup_line_char_frac": dup_chars / total if total else 0.0,
        "newline_word_ratio": text.count("\n") / len(text.split()) if text.split() else 0.0,
    }


def _random_documents(seed: int, count: int) -> list[str]:
    """Documents from pieces that stress every byte-level path (trimming, non-ASCII, bullets,
    ellipses, repeated lines, unusual whitespace); no character whose Python and Arrow
    lowercase differ."""
    rng = random.Random(seed)
    pieces = ["the", "The", "THE", "of", "(and", "the.", '"to"', "--be--", "été", "Été", "naïve", "中文",
              "…", "...", "....", "#tag", "{", "123", "!!!", "-", "•", "* ", "–", "x", "\u00a0", "\u3000",
              "\u2003", "\x1c", "\x0b", "\x0c", "\r", "\t", " ", "\n", "\n\n", "\n \n", ".", "!", "?",
              "。", "--" * 20, "“quoted”", "«", "»", "¿", "word" * 3, "with", "that,", "have;"]  # fmt: skip
    docs = []
    for _ in range(count):
        parts = [rng.choice(pieces) + rng.choice([" ", " ", "\n", ""]) for _ in range(rng.choice([0, 1, 3, 20, 80]))]
        docs.append("".join(parts + parts[: rng.randint(0, len(parts))]))
    return docs


def test_vectorised_measures_equal_the_definitions_on_random_and_real_text() -> None:
    texts = _random_documents(11, 600) + PROSE + ["", " ", "\n\n"]
    params = HeuristicFilterParams.model_validate({"gopherQuality": {"stopWords": ["the", "to", "été", "with", "that"]}})
    batch = TextBatch(texts)
    quality = gopher_quality_measures(batch, params.gopher_quality)
    fineweb = fineweb_measures(batch, params.fineweb)
    for i, text in enumerate(texts):
        for key, value in _reference_quality(text, params.gopher_quality.stop_words).items():
            assert quality[key][i] == pytest.approx(value), (key, text)
        for key, value in _reference_fineweb(text).items():
            assert fineweb[key][i] == pytest.approx(value), (key, text)


def test_sentence_counts_equal_the_regular_expression() -> None:
    rng = random.Random(5)
    alphabet = list(".!?\"')]”’ \t\n\r\x0c\x0bab…(“") + ["\u00a0", "é"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(5000)]
    texts += ['.' + '"' * 40 + " ", "a." + ")" * 20, *PROSE]
    batch = TextBatch(texts)
    assert batch.sentences.tolist() == pc.count_substring_regex(pa.array(texts), SENTENCE_END).to_numpy().tolist()


def test_whitespace_of_words_is_str_split_whitespace() -> None:
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    batch = TextBatch(["a" + c + "b" for c in chars])
    splits = batch.words.per_doc()
    assert [c for c, n in zip(chars, splits, strict=True) if n == 2] == [c for c in chars if c.isspace()]


# ---- the speed work of issue 9 changed no decision --------------------------------------------

# Digests of the implementation before the speed work (commit 473cf8c) on `_synthetic_corpus()`:
# reasons with default params; every family's measures (exact floats); stop-word counts for a
# second word list.
SYNTHETIC_REASONS_SHA256 = "16698bcf97ba166ae3ddeb1985bb6540836c83af406a649595093f0b02621d8b"
SYNTHETIC_MEASURES_SHA256 = "1001f095077156269988c1cf1ee8154ff67a1ffdabc2dcf8b631c515f578cc18"
SYNTHETIC_STOP_WORDS_SHA256 = "e91e4ffe3701d9069f00b4d911832e7c4ea2ea4bc285b506bbf34f58e985bd4a"


def _synthetic_corpus() -> list[str]:
    """Deterministic web-like documents: Zipf-distributed words of every shape the stop-word
    matcher distinguishes (case, punctuation at either end, digits, symbols, non-ASCII, words
    longer than 8 bytes), in sentences, lines and paragraphs, some repeated."""
    rng = random.Random(2026)
    common = ["the", "The", "THE", "of", "and", "to", "be", "that", "have", "with", "a", "in", "is",
              "it", "for", "on", "was", "he", "as", "at", "by", "this", "had", "not", "but", "from"]  # fmt: skip
    shapes = ["{w}", "{w},", "{w}.", "({w})", '"{w}"', "{w}'s", "--{w}--", "{w}!", "«{w}»", "{W}", "{w}…"]
    rare = ["".join(rng.choice("abcdefghijklmnoprstuvwyz") for _ in range(rng.randint(1, 14))) for _ in range(3000)]
    rare += ["naïve", "café", "été", "Tōkyō", "中文", "wörld", "123", "4.5", "@the", "t#e", "th3", "to@", "x" * 40]
    docs = []
    for _ in range(1500):
        words = []
        for _ in range(int(rng.lognormvariate(5, 1)) + 1):
            w = rng.choice(common) if rng.random() < 0.4 else rare[min(int(rng.paretovariate(0.7)) - 1, len(rare) - 1)]
            words.append(rng.choice(shapes).format(w=w, W=w.upper()) if rng.random() < 0.3 else w)
        text = ""
        for w in words:
            text += w + rng.choice([" "] * 12 + ["\n", "\n\n", ". ", "\t", "\u00a0"])
        if rng.random() < 0.1:  # repeated lines and paragraphs
            text += ("\n" + text[: rng.randint(0, 200)]) * rng.randint(1, 4)
        docs.append(text)
    return docs


def _stop_word_counts(texts: list[str], stop_words: list[str]) -> list[float]:
    params = HeuristicFilterParams.model_validate({"gopherQuality": {"stopWords": stop_words}})
    return gopher_quality_measures(TextBatch(texts), params.gopher_quality)["stop_words"].tolist()


def _all_measures(texts: list[str]) -> dict[str, list[float]]:
    batch, params = TextBatch(texts), HeuristicFilterParams()
    measures = {
        **gopher_quality_measures(batch, params.gopher_quality),
        **{f"rep_{k}": v for k, v in gopher_repetition_measures(batch, params.gopher_repetition).items()},
        **{f"c4_{k}": v for k, v in c4_measures(batch, params.c4).items()},
        **{f"fw_{k}": v for k, v in fineweb_measures(batch, params.fineweb).items()},
    }
    return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in measures.items()}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def test_synthetic_corpus_reasons_measures_and_stop_words_are_unchanged() -> None:
    texts = _synthetic_corpus()
    reasons, _ = evaluate_column(pa.array(texts, pa.string()), HeuristicFilterParams(), batch_rows=500)
    other_list = ["the", "to", "été", "with", "that", "@the", "123", "4.5", "x" * 40, "naïve", "a"]
    assert _digest(reasons) == SYNTHETIC_REASONS_SHA256
    assert _digest(_all_measures(texts)) == SYNTHETIC_MEASURES_SHA256
    assert _digest(_stop_word_counts(texts, other_list)) == SYNTHETIC_STOP_WORDS_SHA256


@pytest.mark.parametrize(
    "stop_words",
    [
        ["the", "be", "to", "of", "and", "that", "have", "with"],
        ["@the", "t#e", "th3", "to@", "123", "4.5", "a"],  # first bytes whose `| 0x20` is not a letter
        ["internationalization", "été", "naïve", "the"],  # too long to pack, and non-ASCII
        [chr(c) for c in range(0x21, 0x7F)],  # every printable ASCII character as a one-byte word
    ],
)
def test_stop_word_counts_equal_the_definition_for_any_word_list(stop_words: list[str]) -> None:
    texts = _synthetic_corpus()[:300] + _random_documents(3, 300) + PROSE
    counts = _stop_word_counts(texts, stop_words)
    wanted = set(stop_words)
    expected = [sum(w.lower().strip(TRIM) in wanted for w in text.split()) for text in texts]
    assert counts == expected


def test_retaining_freed_memory_is_idempotent_and_changes_no_decision() -> None:
    from curation.stages.heuristic import retain_freed_memory

    texts = pa.array(_synthetic_corpus()[:200] + PROSE, pa.string())
    before, _ = evaluate(texts, HeuristicFilterParams())
    first = retain_freed_memory()
    assert retain_freed_memory() == first  # a no-op (False) off glibc, True on it, every time
    assert evaluate_column(texts, HeuristicFilterParams(), batch_rows=64)[0] == before


@pytest.mark.parametrize("run", range(1, 20))
def test_a_punctuation_word_at_the_end_of_a_batch_is_counted_like_the_definition(run: int) -> None:
    # Found at 1M synthetic documents: a word of 12-16 punctuation bytes ending the batch was
    # trimmed to nothing at the buffer's end, and its first byte read one past it.
    texts = ["the cat sat on the mat and the dog " + "!" * run, "to be or not to be " + "?." * run]
    for batch in (texts, texts[:1], texts[::-1]):
        counts = _stop_word_counts(batch, ["the", "to", "be", "and", "!", "?"])
        expected = [sum(w.lower().strip(TRIM) in {"the", "to", "be", "and", "!", "?"} for w in t.split())
                    for t in batch]
        assert counts == expected
