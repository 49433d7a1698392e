"""The heuristic filter's word split and exact word ids (`curation.stages.heuristic_rules`)."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.stages import heuristic_rules
from curation.stages.heuristic_rules import TextBatch, exact_ids, unit_keys
from curation.stages.minhash_math import utf8_buffer


def _random_strings(rng: random.Random, alphabet: str, count: int, longest: int) -> list[str]:
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest))) for _ in range(count)]


def _same_partition(ids: np.ndarray, reference: np.ndarray) -> bool:
    """Whether two labellings group the items alike (equal under one exactly where under the other)."""
    pairs = set(zip(ids.tolist(), reference.tolist(), strict=True))
    return len(pairs) == len(set(ids.tolist())) == len(set(reference.tolist()))


def _check_ids(strings: list[str], docs: int, rng: random.Random) -> None:
    array = pa.array(strings, pa.large_string())
    values, offsets = utf8_buffer(array)
    parent = np.sort(np.array([rng.randrange(docs) for _ in strings], dtype=np.int64))
    bounds = np.searchsorted(parent, np.arange(docs + 1))
    found = exact_ids(values, offsets, bounds)
    assert found is not None
    ids, recurring = found
    assert ids.min(initial=0) >= 0 and ids.max(initial=0) < 2 * max(len(strings), 1)
    # the definition: one id per (document, string)
    reference = pc.dictionary_encode(array).indices.to_numpy().astype(np.int64) * docs + parent
    assert _same_partition(ids, reference)
    assert recurring.tolist() == (np.bincount(ids)[ids] > 1).tolist()


@pytest.mark.parametrize("docs", [1, 3, 60])
def test_word_ids_are_equal_exactly_for_equal_strings_of_one_document(docs: int) -> None:
    rng = random.Random(docs)
    for alphabet in ("ab", "abc\x00", "aé中", "x"):  # short and long strings, shared prefixes
        for _ in range(20):
            _check_ids(_random_strings(rng, alphabet, rng.randint(1, 2000), 40), docs, rng)


def test_word_ids_stay_exact_when_truncated_keys_collide_and_in_small_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Few key bits left after the document and index: different keys share the sorted bits often.
    rng = random.Random(7)
    for bits in (20, 30, 36):
        monkeypatch.setattr(heuristic_rules, "_bit_width", lambda x, bits=bits: bits)
        for _ in range(20):
            _check_ids(_random_strings(rng, "abc", rng.randint(1, 2000), 12), rng.choice([1, 3, 50]), rng)
    monkeypatch.undo()
    for chunk in (1, 7, 100):
        monkeypatch.setattr(heuristic_rules, "ID_CHUNK", chunk)
        for _ in range(20):
            _check_ids(_random_strings(rng, "abé", rng.randint(1, 2000), 20), rng.choice([1, 3, 50, 400]), rng)


def test_short_strings_are_their_own_keys() -> None:
    strings = ["", "a", "a\x00", "\x00", "abcdefg", "abcdefh", "abcdefgh"]
    values, offsets = utf8_buffer(pa.array(strings, pa.large_string()))
    keys = unit_keys(np.ndarray((len(values) + 1,), "<u8", np.append(values, np.zeros(8, np.uint8)), 0, (1,)), offsets)
    assert len(set(keys.tolist())) == len(strings)
    assert keys[1] == ord("a") | 1 << 56 and keys[0] == 0
    assert keys[-1] >= 1 << 63 and all(k < 8 << 56 for k in keys[:-1])


def test_a_hash_collision_of_different_long_words_falls_back_to_arrow(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every long word gets the same key: the byte comparison must refuse to join them.
    real = heuristic_rules.unit_keys

    def colliding(as_u64: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        keys = real(as_u64, offsets)
        keys[keys >= np.uint64(1 << 63)] = np.uint64(1 << 63)
        return keys

    monkeypatch.setattr(heuristic_rules, "unit_keys", colliding)
    texts = ["international cooperation international relations cooperation", "short words only"]
    values, offsets = utf8_buffer(pa.array(texts[0].split(), pa.large_string()))
    assert exact_ids(values, offsets) is None
    words = TextBatch(texts).words
    by_word = dict(zip(pc.cast(words.values, pa.string()).to_pylist(), words.ids.tolist(), strict=True))
    assert by_word["international"] != by_word["cooperation"] != by_word["relations"]
    assert words.ids.tolist()[:4] == [by_word[w] for w in texts[0].split()[:4]]


def test_words_never_join_across_documents_and_are_str_split() -> None:
    rng = random.Random(3)
    alphabet = "ab \n\t\x0b\x0c\r\x1c\x1f\u00a0\u2003\u3000é"
    for _ in range(30):
        texts = _random_strings(rng, alphabet, rng.randint(1, 300), 30)
        words = TextBatch(texts).words
        assert pc.cast(words.values, pa.string()).to_pylist() == [w for t in texts for w in t.split()]
        assert words.parent.tolist() == [i for i, t in enumerate(texts) for _ in t.split()]
