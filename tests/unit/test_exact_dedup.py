"""Exact deduplication: normalisation, survivor choice, invariance to parallelism, resumability."""

from __future__ import annotations

import random
import string
import unicodedata
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation.dataset import RankMarker
from curation.executor import run_rank
from curation.layout import RunLayout
from curation.plan import plan_steps
from curation.stages import exact_math
from curation.stages.exact_dedup import choose_keepers
from curation.stages.exact_math import normalize_for_hash, text_hashes
from tests.helpers import make_spec, output_rows, reference_normalize, run_all, write_docs

VARIANTS = [
    "Hello world. This is a test.",
    "hello   WORLD this is a TEST",
    "  Hello,\tworld!\nThis is a test…  ",
    "Ｈｅｌｌｏ world, this is a test",  # full-width letters: equal after NFKC
]
OTHERS = ["Something else entirely.", "Hello world. This is another test.", ""]


def _hashes(texts: list[str], mode: str) -> list[tuple[int, int]]:
    hi, lo = text_hashes(normalize_for_hash(pa.array(texts), mode))
    return list(zip(hi.tolist(), lo.tolist(), strict=True))


def test_strip_punctuation_makes_whitespace_case_and_punctuation_variants_equal() -> None:
    hashes = _hashes(VARIANTS + OTHERS, "strip-punctuation")
    assert len(set(hashes[: len(VARIANTS)])) == 1
    assert len(set(hashes)) == 1 + len(OTHERS)


def test_whitespace_normalisation_only_collapses_whitespace() -> None:
    hashes = _hashes(["a  b\n c", "a b c", " a b c ", "A b c", "a, b c"], "whitespace")
    assert hashes[0] == hashes[1] == hashes[2]
    assert len(set(hashes)) == 3


def test_no_normalisation_compares_raw_bytes() -> None:
    hashes = _hashes(["a b", "a  b", "a b"], "none")
    assert hashes[0] == hashes[2] != hashes[1]


def test_choose_keepers_keeps_lowest_key_or_longest() -> None:
    hi = np.array([1, 1, 2, 1, 2], dtype=np.uint64)
    lo = np.array([5, 5, 9, 5, 9], dtype=np.uint64)
    keys = np.array([40, 10, 30, 20, 31], dtype=np.uint64)
    lengths = np.array([7, 3, 5, 7, 5])
    removed, keeper, sizes = choose_keepers(hi, lo, keys, lengths, "first")
    assert dict(zip(keys[removed].tolist(), keys[keeper].tolist(), strict=True)) == {20: 10, 40: 10, 31: 30}
    assert sorted(sizes.tolist()) == [2, 3]
    removed, keeper, _ = choose_keepers(hi, lo, keys, lengths, "longest")
    assert dict(zip(keys[removed].tolist(), keys[keeper].tolist(), strict=True)) == {10: 20, 40: 20, 31: 30}


def _run(
    tmp: Path, texts: list[str], parallelism: int = 2, shards: int = 3, **params: object
) -> tuple[Path, dict]:
    inp = write_docs(tmp / "in", texts, shards=shards)
    spec = make_spec(inp, tmp / "out", [{"type": "exact-dedup", "params": params}], parallelism=parallelism)
    return tmp / "out", run_all(spec)


def test_exact_dedup_removes_variants_and_keeps_the_first(tmp_path: Path) -> None:
    texts = VARIANTS + OTHERS + ["Something else entirely."]
    out, summary = _run(tmp_path, texts, normalize="strip-punctuation")
    kept = sorted(r["doc_id"] for r in output_rows(out))
    # 3 shards round-robin: d00000 is shard 0 row 0, the lowest key of the variant group
    assert kept == ["d00000", "d00004", "d00005", "d00006"]
    rejected = {r["doc_id"]: r for r in output_rows(out, "rejected")}
    assert {k: (r["reason"], r["dup_of"]) for k, r in rejected.items()} == {
        "d00001": ("exact-duplicate", "d00000"),
        "d00002": ("exact-duplicate", "d00000"),
        "d00003": ("exact-duplicate", "d00000"),
        "d00007": ("exact-duplicate", "d00004"),
    }
    stage = summary["stages"][1]
    assert stage["docs_in"] == stage["docs_out"] + sum(stage["removed"].values()) == len(texts)
    assert stage["extra"]["cluster_sizes"] == {"2": 1, "4": 1}
    assert set(output_rows(out)[0]) == {"doc_id", "text"}  # kept rows are unchanged


def test_keep_longest_keeps_the_longest_original_text(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, ["a b c", "A  B   C", "a b c!"], keep="longest",
                  normalize="strip-punctuation")
    assert [r["doc_id"] for r in output_rows(out)] == ["d00001"]


def test_keep_first_is_deterministic_across_reruns(tmp_path: Path) -> None:
    texts = [f"doc {i % 7}" for i in range(60)]
    first, _ = _run(tmp_path / "a", texts)
    second, _ = _run(tmp_path / "b", texts)
    assert output_rows(first) == output_rows(second)
    assert output_rows(first, "rejected") == output_rows(second, "rejected")


@pytest.mark.parametrize("parallelism", [2, 3])
def test_results_do_not_depend_on_parallelism(tmp_path: Path, parallelism: int) -> None:
    texts = [f"Doc   number {i % 11}" if i % 3 else f"doc number {i % 11}." for i in range(100)]
    one, _ = _run(tmp_path / "one", texts, parallelism=1, shards=4, normalize="strip-punctuation")
    many, _ = _run(tmp_path / "many", texts, parallelism=parallelism, shards=4, normalize="strip-punctuation")
    for sub in ("data", "rejected"):
        assert sorted(map(str, output_rows(one, sub))) == sorted(map(str, output_rows(many, sub)))
    assert len(output_rows(one)) == 11


def test_more_hash_partitions_than_ranks_give_the_same_result(tmp_path: Path) -> None:
    texts = [f"text {i % 9}" for i in range(50)]
    plain, plain_summary = _run(tmp_path / "plain", texts)
    split, split_summary = _run(tmp_path / "split", texts, partitions=7)
    assert output_rows(plain) == output_rows(split)
    # Group sizes are merged partition by partition: the same histogram (50 = 5 groups of 6 + 4 of 5)
    assert plain_summary["stages"][1]["extra"]["cluster_sizes"] == {"5": 4, "6": 5}
    assert split_summary["stages"][1]["extra"]["cluster_sizes"] == {"5": 4, "6": 5}


def test_rerunning_ranks_and_recovering_from_a_kill_give_identical_files(tmp_path: Path) -> None:
    texts = [f"text {i % 9}" for i in range(50)]
    out, _ = _run(tmp_path, texts)
    work = out / "_work"

    def contents() -> dict[str, list]:
        return {
            str(p.relative_to(work)): pq.read_table(p).to_pylist()
            for p in sorted(work.rglob("[!.]*.parquet"))
        }

    before = contents()
    spec = make_spec(tmp_path / "in", out, [{"type": "exact-dedup"}], parallelism=2)
    layout = RunLayout.of(str(out))
    scratch = Path(layout.stage_scratch(1, "exact-dedup").path)
    for step in plan_steps(spec)[1:-1]:
        RankMarker(layout.work, step.id).clear()
        for done in (scratch / "_shard_stats").rglob("s00000.json"):
            done.unlink()  # shard 0 "was being processed" when the rank died
    (scratch / "select" / "r00000.parquet").unlink()
    (Path(layout.stage_files(1, "exact-dedup").decisions(0).path)).unlink()
    for step in plan_steps(spec)[1:-1]:
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
    assert contents() == before


# ---- the fast hashing path (issue 9): same texts, same hashes, whatever the column's shape ------

def _mixed_texts(seed: int, count: int, unicode_share: float) -> list[str]:
    rng = random.Random(seed)
    ascii_parts = ["Hello", "WORLD", "a+b", "x = 1;", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x00", ".", ",!?"]
    others = ["café", "Ａ", "ﬁ", "…", "\u00a0", "\u3000", "\u2028", "e\u0301", "\u1100\u1161", "한국", "中文，", "😀",
              "İ", "Σ", "ß", "\u09c7\u09be", "\u0301", "’", "“", "—", "\u212b", "\U0001d400", "\u0378"]
    out = []
    for _ in range(count):
        words = [rng.choice(ascii_parts) for _ in range(rng.randint(0, 30))]
        if rng.random() < unicode_share:
            words.insert(rng.randint(0, len(words)), rng.choice(others))
        out.append("".join(words) if rng.random() < 0.5 else " ".join(words))
    return out


@pytest.mark.parametrize("mode", ["none", "whitespace", "full", "strip-punctuation"])
def test_fast_hashes_equal_the_definition_for_every_column_shape(mode: str) -> None:
    texts = _mixed_texts(1, 1500, 0.05) + _mixed_texts(2, 500, 0.9) + ["", " ", "\n\t", "ABC"]
    ref_hi, ref_lo = text_hashes(reference_normalize(pa.array(texts), mode))
    ref_hashable = pc.binary_length(reference_normalize(pa.array(texts), mode)).to_numpy() > 0
    shapes = {
        "one array": pa.array(texts, pa.string()),
        "large_string": pa.array(texts, pa.large_string()),
        "tiny chunks": pa.chunked_array([pa.array(texts[i : i + 7]) for i in range(0, len(texts), 7)]),
        "sliced": pa.array(["pad"] * 5 + texts + ["pad"]).slice(5, len(texts)),
        "uneven chunks": pa.chunked_array([pa.array(texts[:3]), pa.array(texts[3:1700]), pa.array([], pa.string()),
                                           pa.array(texts[1700:])]),
    }
    for name, column in shapes.items():
        for batch_bytes in (exact_math.BATCH_BYTES, 3000, 1):
            hi, lo, hashable = exact_math.exact_hashes(column, mode, batch_bytes=batch_bytes)
            assert np.array_equal(hi, ref_hi) and np.array_equal(lo, ref_lo), (name, batch_bytes)
            assert np.array_equal(hashable, ref_hashable), (name, batch_bytes)
    assert normalize_for_hash(shapes["tiny chunks"], mode).to_pylist() == reference_normalize(pa.array(texts), mode).to_pylist()


def test_nfkc_is_skipped_only_where_it_cannot_change_the_text() -> None:
    def needs(texts: list[str]) -> list[bool]:
        values, offsets = exact_math._buffers(pa.array(texts, pa.string()))
        return exact_math._needs_nfkc(values, offsets).tolist()

    # inert: accented letters as one character, curly quotes, dashes, Hangul syllables, CJK
    assert needs(["plain", "café", "“quoted” — ’", "한국어", "中文。", "ÀÉÎ"]) == [False] * 6
    # NFKC changes these, or may with the character before: compatibility forms, a decomposed
    # accent, Hangul jamo, a Bengali vowel sign pair, no-break space, ellipsis, unassigned
    assert needs(["ﬁ", "Ａ", "e\u0301", "\u1100\u1161", "\u09c7\u09be", "a\u00a0b", "…", "\u0378"]) == [True] * 8
    # Every code point between letters, and every canonically decomposable character in NFD: a
    # text NFKC would change is never skipped.
    texts = ["a" + chr(c) + "b" for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000]
    texts += [unicodedata.normalize("NFD", chr(c)) for c in range(0x30000) if unicodedata.decomposition(chr(c))]
    arr = pa.array(texts, pa.string())
    values, offsets = exact_math._buffers(arr)
    skipped = ~exact_math._needs_nfkc(values, offsets)
    unchanged = pc.equal(pc.utf8_normalize(arr, "NFKC"), arr).to_numpy(zero_copy_only=False)
    assert not (skipped & ~unchanged).any()
    assert skipped.sum() > 100_000  # and most assigned characters are skipped


def test_a_later_exact_stage_sees_only_the_survivors_of_an_earlier_one(tmp_path: Path) -> None:
    """Shards with removed rows: keys are positions among the alive documents, the survivor the
    first alive copy."""
    base = ["Hello world.", "hello world", "HELLO, world!", "Hello world.", "x", "x", "  x  ", "", " ", "a b", "a  b"]
    texts = [t + (" tail" if i % 17 == 0 else "") for i, t in enumerate(base * 5)]
    shards = 3
    inp = write_docs(tmp_path / "in", texts, shards=shards)
    stages = [{"type": "exact-dedup", "name": "raw", "params": {"normalize": "none"}},
              {"type": "exact-dedup", "name": "prose", "params": {"normalize": "strip-punctuation"}}]
    run_all(make_spec(inp, tmp_path / "out", stages, parallelism=2))

    def prose(text: str) -> str:
        return " ".join("".join(c for c in text.lower() if c not in string.punctuation).split())

    def removals(docs: list[int], key: Callable[[str], str]) -> dict[int, int]:
        groups: dict[str, list[int]] = {}
        for i in sorted(docs, key=lambda i: (i % shards, i // shards)):  # shard, then row
            if key(texts[i]):
                groups.setdefault(key(texts[i]), []).append(i)
        return {j: g[0] for g in groups.values() for j in g[1:]}

    raw = removals(list(range(len(texts))), lambda t: t)
    later = removals([i for i in range(len(texts)) if i not in raw], prose)
    expected = {f"d{j:05d}": ("raw", f"d{k:05d}") for j, k in raw.items()}
    expected |= {f"d{j:05d}": ("prose", f"d{k:05d}") for j, k in later.items()}
    rejected = {r["doc_id"]: (r["stage"], r["dup_of"]) for r in output_rows(tmp_path / "out", "rejected")}
    assert rejected == expected
    assert later  # the second stage did remove something among the survivors
