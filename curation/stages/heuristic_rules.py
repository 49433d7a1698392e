"""Pure, vectorised rule functions of the heuristic filter (Gopher, C4, FineWeb).

A shard's texts are split once into words, lines and paragraphs with Arrow compute kernels
(`TextBatch`, every split computed lazily and shared by all rule families); the measures are
then per-document numpy reductions over those flat arrays. Nothing here loops over documents
in Python, which is what makes thousands of documents per second per core possible.

Each family has a `<family>_measures(batch, rules)` function (per-document numbers, handy for
tests and reports) and a `<family>_checks(batch, rules)` function: an ordered list of
(rule name, rejection mask). `first_failures` turns checks into one reason per document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.params.heuristic import C4Rules, FineWebRules, GopherQualityRules, GopherRepetitionRules

Check = tuple[str, np.ndarray]  # (rule name, True where the document fails the rule)

# Tokens made only of punctuation and symbols are not words for Gopher's counts.
HAS_NON_SYMBOL = r"[^\p{P}\p{S}]"
HAS_LETTER = r"\pL"
BULLET_START = r"^[•\-*‣◦⁃●▪–]"
ELLIPSIS_END = r"(\.\.\.|…)$"
# Terminal punctuation of FineWeb's line rule: Latin, CJK, Devanagari, Arabic, Armenian, Ethiopic marks.
FINEWEB_LINE_END = "[.'\"!?։؟۔।॥።፧。！．？｡]$"
C4_LINE_END = '[.!?"”]$'
SENTENCE_END = r"[.!?]+[\"'”’)\]]*(?:\s|$)"
C4_POLICY = r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies"
TRIM_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—¿¡"


@dataclass(frozen=True)
class Units:
    """Flat units (words, lines or paragraphs) of a batch, each with the index of its document."""

    values: pa.Array
    parent: np.ndarray  # int64, non-decreasing

    @cached_property
    def lengths(self) -> np.ndarray:
        return _np(pc.utf8_length(self.values), np.int64)

    @cached_property
    def ids(self) -> np.ndarray:
        """Dense id per distinct value over the whole batch (equal strings, equal ids)."""
        return _np(pc.dictionary_encode(self.values).indices, np.int64)

    @cached_property
    def repeated(self) -> np.ndarray:
        """True for each unit that repeats an earlier unit of the same document."""
        if len(self.parent) == 0:
            return np.zeros(0, dtype=bool)
        width = int(self.ids.max()) + 1
        return repeats_earlier(self.parent * width + self.ids)

    def matches(self, pattern: str) -> np.ndarray:
        return _np(pc.match_substring_regex(self.values, pattern), bool)


def _np(arr: pa.Array | pa.ChunkedArray, dtype: type) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)


@dataclass(frozen=True)
class Repeats:
    """The positions whose key occurs more than once, grouped by key."""

    positions: np.ndarray  # positions of keys that occur at least twice (grouped, not ascending)
    group: np.ndarray  # group id (0..groups-1) of each such position
    is_first: np.ndarray  # True at the first (smallest) position of each group
    groups: int


def find_repeats(keys: np.ndarray) -> Repeats:
    # An unstable (SIMD) argsort is several times faster than a stable one; the first occurrence
    # of each group is recovered as the group's smallest position instead.
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    sizes = np.diff(np.append(starts, len(keys)))
    multi = sizes >= 2
    if not multi.any():
        empty = np.zeros(0, dtype=np.int64)
        return Repeats(empty, empty, np.zeros(0, dtype=bool), 0)
    first = np.minimum.reduceat(order, starts)[multi]
    positions = order[np.repeat(multi, sizes)]
    group = np.repeat(np.arange(int(multi.sum())), sizes[multi])
    return Repeats(positions, group, positions == first[group], int(multi.sum()))


def repeats_earlier(keys: np.ndarray) -> np.ndarray:
    """For each position, True when an earlier position holds the same key."""
    rep = find_repeats(keys)
    out = np.zeros(len(keys), dtype=bool)
    out[rep.positions[~rep.is_first]] = True
    return out


def _split(lists: pa.Array, strip: bool) -> Units:
    values = pc.list_flatten(lists)
    parent = _np(pc.list_parent_indices(lists), np.int64)
    if strip:
        values = pc.utf8_trim_whitespace(values)
    keep = _np(pc.greater(pc.utf8_length(values), 0), bool)
    if not keep.all():
        values = values.filter(pa.array(keep))
        parent = parent[keep]
    return Units(values, parent)


class TextBatch:
    """The texts of one shard and their splits, each computed once on first use."""

    def __init__(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> None:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        if not isinstance(texts, pa.Array):
            texts = pa.array(list(texts), pa.string())
        self.texts: pa.Array = texts.fill_null("")
        self.n = len(self.texts)

    def per_doc(self, parent: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(parent, weights=weights, minlength=self.n).astype(np.float64)

    def count(self, substring: str) -> np.ndarray:
        return _np(pc.count_substring(self.texts, substring), np.float64)

    @cached_property
    def words(self) -> Units:
        return _split(pc.utf8_split_whitespace(self.texts), strip=False)

    @cached_property
    def normalized_words(self) -> pa.Array:
        """Words lowercased with surrounding punctuation trimmed (for word lists)."""
        return pc.utf8_trim(pc.utf8_lower(self.words.values), TRIM_PUNCT)

    @cached_property
    def word_count(self) -> np.ndarray:
        return self.per_doc(self.words.parent)

    @cached_property
    def lines(self) -> Units:
        return _split(pc.split_pattern(self.texts, "\n"), strip=True)

    @cached_property
    def line_count(self) -> np.ndarray:
        return self.per_doc(self.lines.parent)

    @cached_property
    def paragraphs(self) -> Units:
        return _split(pc.split_pattern_regex(self.texts, r"\n\s*\n"), strip=True)

    def repeated_fractions(self, units: Units) -> tuple[np.ndarray, np.ndarray]:
        """Per document: fraction of units repeating an earlier one, and of their characters."""
        total = self.per_doc(units.parent)
        chars = self.per_doc(units.parent, units.lengths)
        rep = units.repeated
        rep_count = self.per_doc(units.parent[rep])
        rep_chars = self.per_doc(units.parent[rep], units.lengths[rep])
        return ratio(rep_count, total), ratio(rep_chars, chars)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (an empty document has no bad fraction of anything)."""
    out = np.zeros(len(num), dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def first_failures(n: int, checks: Iterable[Check]) -> list[str | None]:
    """One reason per document: the first failing check's name, None when all pass."""
    reasons = np.full(n, None, dtype=object)
    still_open = np.ones(n, dtype=bool)
    for name, fails in checks:
        if not still_open.any():
            break
        hit = still_open & fails
        reasons[hit] = name
        still_open &= ~hit
    return reasons.tolist()


# ---- Gopher quality ------------------------------------------------------------------------


def gopher_quality_measures(batch: TextBatch, rules: GopherQualityRules) -> dict[str, np.ndarray]:
    words = batch.words
    real = words.matches(HAS_NON_SYMBOL)
    n_words = batch.per_doc(words.parent[real])
    stops = pc.is_in(batch.normalized_words, value_set=pa.array(rules.stop_words, pa.string()))
    return {
        "words": n_words,
        "mean_word_length": ratio(batch.per_doc(words.parent[real], words.lengths[real]), n_words),
        "hash_ratio": ratio(batch.count("#"), n_words),
        "ellipsis_ratio": ratio(batch.count("...") + batch.count("…"), n_words),
        "bullet_line_frac": ratio(
            batch.per_doc(batch.lines.parent[batch.lines.matches(BULLET_START)]), batch.line_count
        ),
        "ellipsis_line_frac": ratio(
            batch.per_doc(batch.lines.parent[batch.lines.matches(ELLIPSIS_END)]), batch.line_count
        ),
        "alpha_word_frac": ratio(batch.per_doc(words.parent[words.matches(HAS_LETTER)]), batch.word_count),
        "stop_words": batch.per_doc(words.parent[_np(stops, bool)]),
    }


def gopher_quality_checks(batch: TextBatch, rules: GopherQualityRules) -> list[Check]:
    m = gopher_quality_measures(batch, rules)
    return [
        ("gopher-quality:min-words", m["words"] < rules.min_words),
        ("gopher-quality:max-words", m["words"] > rules.max_words),
        ("gopher-quality:min-mean-word-length", m["mean_word_length"] < rules.min_mean_word_length),
        ("gopher-quality:max-mean-word-length", m["mean_word_length"] > rules.max_mean_word_length),
        ("gopher-quality:hash-ratio", m["hash_ratio"] > rules.max_hash_word_ratio),
        ("gopher-quality:ellipsis-ratio", m["ellipsis_ratio"] > rules.max_ellipsis_word_ratio),
        ("gopher-quality:bullet-lines", m["bullet_line_frac"] > rules.max_bullet_line_frac),
        ("gopher-quality:ellipsis-lines", m["ellipsis_line_frac"] > rules.max_ellipsis_line_frac),
        ("gopher-quality:alpha-words", m["alpha_word_frac"] < rules.min_alpha_word_frac),
        ("gopher-quality:stop-words", m["stop_words"] < rules.min_stop_words),
    ]


# ---- Gopher repetition ---------------------------------------------------------------------

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a strong 64-bit mix, vectorised (uint64 arithmetic wraps)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def ngram_char_fractions(
    ids: np.ndarray,
    lengths: np.ndarray,
    parent: np.ndarray,
    n_docs: int,
    top_sizes: Iterable[int],
    dup_sizes: Iterable[int],
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Word n-gram repetition per document, as fractions of the document's word characters.

    Returns ({n: chars of all occurrences of the most frequent repeated n-gram},
    {n: chars of words inside any occurrence, after the first, of a repeated n-gram}).

    An n-gram can repeat only where its (n-1)-gram prefix repeats, so after n=2 only the start
    positions of repeated (n-1)-grams are extended and searched: the candidates shrink fast."""
    top_sizes, dup_sizes = set(top_sizes), set(dup_sizes)
    total = len(ids)
    doc_chars = np.bincount(parent, weights=lengths, minlength=n_docs).astype(np.float64)
    cum = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    top = {n: np.zeros(n_docs) for n in top_sizes}
    dup = {n: np.zeros(n_docs) for n in dup_sizes}
    starts = np.arange(total, dtype=np.int64)
    keys = mix64(parent.astype(np.uint64))  # the document is part of every n-gram's key
    for n in range(1, max(top_sizes | dup_sizes, default=0) + 1):
        last = starts + (n - 1)
        inside = last < total
        inside[inside] = parent[last[inside]] == parent[starts[inside]]
        starts, last, keys = starts[inside], last[inside], keys[inside]
        keys = mix64(keys ^ (ids[last].astype(np.uint64) + np.uint64(n)))
        if n == 1 or len(starts) == 0:
            continue  # single words repeat everywhere: not worth a pruning pass
        rep = find_repeats(keys)
        rep_starts = starts[rep.positions]
        if n in top_sizes:
            top[n] = ratio(_top_ngram_chars(rep, rep_starts, cum, parent, n, n_docs), doc_chars)
        if n in dup_sizes:
            later = rep_starts[~rep.is_first]
            cover = np.bincount(later, minlength=total + 1) - np.bincount(later + n, minlength=total + 1)
            covered = np.cumsum(cover[:total]) > 0
            dup_chars = np.bincount(parent[covered], weights=lengths[covered], minlength=n_docs)
            dup[n] = ratio(dup_chars.astype(np.float64), doc_chars)
        keep = np.sort(rep.positions)
        starts, keys = starts[keep], keys[keep]
    return top, dup


def _top_ngram_chars(
    rep: Repeats, starts: np.ndarray, cum: np.ndarray, parent: np.ndarray, n: int, n_docs: int
) -> np.ndarray:
    """Characters of the most frequent repeated n-gram per document (ties: the longer n-gram)."""
    best = np.zeros(n_docs, dtype=np.int64)
    if rep.groups == 0:
        return best.astype(np.float64)
    counts = np.bincount(rep.group, minlength=rep.groups).astype(np.int64)
    first_starts = starts[rep.is_first]  # one per group, in group order of first appearance
    first_groups = rep.group[rep.is_first]
    chars = cum[first_starts + n] - cum[first_starts]
    score = (counts[first_groups] << np.int64(32)) | np.minimum(chars, 0xFFFFFFFF)
    np.maximum.at(best, parent[first_starts], score)
    return ((best >> np.int64(32)) * (best & np.int64(0xFFFFFFFF))).astype(np.float64)


def gopher_repetition_measures(batch: TextBatch, rules: GopherRepetitionRules) -> dict[str, np.ndarray]:
    dup_line, dup_line_chars = batch.repeated_fractions(batch.lines)
    dup_para, dup_para_chars = batch.repeated_fractions(batch.paragraphs)
    words = batch.words
    top, dup = ngram_char_fractions(
        words.ids,
        words.lengths,
        words.parent,
        batch.n,
        rules.max_top_ngram_char_frac,
        rules.max_dup_ngram_char_frac,
    )
    return {
        "dup_line_frac": dup_line,
        "dup_para_frac": dup_para,
        "dup_line_char_frac": dup_line_chars,
        "dup_para_char_frac": dup_para_chars,
        **{f"top_{n}gram_char_frac": v for n, v in top.items()},
        **{f"dup_{n}gram_char_frac": v for n, v in dup.items()},
    }


def gopher_repetition_checks(batch: TextBatch, rules: GopherRepetitionRules) -> list[Check]:
    m = gopher_repetition_measures(batch, rules)
    checks = [
        ("gopher-repetition:dup-line-frac", m["dup_line_frac"] > rules.max_dup_line_frac),
        ("gopher-repetition:dup-para-frac", m["dup_para_frac"] > rules.max_dup_para_frac),
        ("gopher-repetition:dup-line-char-frac", m["dup_line_char_frac"] > rules.max_dup_line_char_frac),
        ("gopher-repetition:dup-para-char-frac", m["dup_para_char_frac"] > rules.max_dup_para_char_frac),
    ]
    for n, limit in rules.max_top_ngram_char_frac.items():
        checks.append((f"gopher-repetition:top-{n}gram-char-frac", m[f"top_{n}gram_char_frac"] > limit))
    for n, limit in rules.max_dup_ngram_char_frac.items():
        checks.append((f"gopher-repetition:dup-{n}gram-char-frac", m[f"dup_{n}gram_char_frac"] > limit))
    return checks


# ---- C4 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class C4Cleaning:
    """Result of C4's line-level rules: the cleaned text per document and the lines dropped."""

    text: pa.Array
    lines_removed: np.ndarray  # int64
    lines_left: np.ndarray  # int64


def c4_clean_lines(batch: TextBatch, rules: C4Rules) -> C4Cleaning:
    """Keep the lines C4 keeps (stripped, joined with newlines)."""
    lines = batch.lines
    keep = np.ones(len(lines.parent), dtype=bool)
    if rules.require_terminal_punct:
        keep &= lines.matches(C4_LINE_END) & ~lines.matches(ELLIPSIS_END)
    tokens = pc.utf8_split_whitespace(lines.values)
    if rules.min_words_per_line:
        keep &= _np(pc.list_value_length(tokens), np.int64) >= rules.min_words_per_line
    flat_lengths = _np(pc.utf8_length(pc.list_flatten(tokens)), np.int64)
    longest = np.zeros(len(keep), dtype=np.int64)
    np.maximum.at(longest, _np(pc.list_parent_indices(tokens), np.int64), flat_lengths)
    keep &= longest <= rules.max_word_length
    lowered = pc.utf8_lower(lines.values)
    if rules.drop_javascript_lines:
        keep &= ~_np(pc.match_substring(lowered, "javascript"), bool)
    if rules.drop_policy_lines:
        keep &= ~_np(pc.match_substring_regex(lowered, C4_POLICY), bool)
    left = np.bincount(lines.parent[keep], minlength=batch.n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(left)]).astype(np.int32)
    kept = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), lines.values.filter(pa.array(keep)))
    text = pc.binary_join(kept, "\n").cast(pa.string())
    removed = batch.line_count.astype(np.int64) - left
    return C4Cleaning(text, removed, left)


def c4_measures(
    batch: TextBatch, rules: C4Rules, cleaning: C4Cleaning | None = None
) -> dict[str, np.ndarray]:
    texts = cleaning.text if cleaning is not None else batch.texts
    bad = np.zeros(batch.n, dtype=bool)
    single = [w.lower() for w in rules.bad_words if " " not in w.strip()]
    phrases = [w.lower().strip() for w in rules.bad_words if " " in w.strip()]
    if single:
        hits = _np(pc.is_in(batch.normalized_words, value_set=pa.array(single, pa.string())), bool)
        bad |= batch.per_doc(batch.words.parent[hits]) > 0
    if phrases:
        pattern = r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b"
        bad |= _np(pc.match_substring_regex(pc.utf8_lower(batch.texts), pattern), bool)
    return {
        "lorem_ipsum": _np(pc.match_substring(batch.texts, "lorem ipsum", ignore_case=True), bool),
        "curly_bracket": _np(pc.match_substring(batch.texts, "{"), bool),
        "bad_word": bad,
        "lines_left": cleaning.lines_left if cleaning is not None else batch.line_count,
        "sentences": _np(pc.count_substring_regex(texts, SENTENCE_END), np.float64),
    }


def c4_checks(batch: TextBatch, rules: C4Rules, cleaning: C4Cleaning | None = None) -> list[Check]:
    m = c4_measures(batch, rules, cleaning)
    checks: list[Check] = []
    if rules.filter_lorem_ipsum:
        checks.append(("c4:lorem-ipsum", m["lorem_ipsum"]))
    if rules.filter_curly_bracket:
        checks.append(("c4:curly-bracket", m["curly_bracket"]))
    checks.append(("c4:bad-word", m["bad_word"]))
    if cleaning is not None:
        checks.append(("c4:no-lines-left", m["lines_left"] == 0))
    checks.append(("c4:min-sentences", m["sentences"] < rules.min_sentences))
    return checks


# ---- FineWeb -------------------------------------------------------------------------------


def fineweb_measures(batch: TextBatch, rules: FineWebRules) -> dict[str, np.ndarray]:
    lines = batch.lines
    _, dup_chars = batch.repeated_fractions(lines)
    short = lines.lengths < rules.short_line_length
    return {
        "line_punct_frac": ratio(
            batch.per_doc(lines.parent[lines.matches(FINEWEB_LINE_END)]), batch.line_count
        ),
        "short_line_frac": ratio(batch.per_doc(lines.parent[short]), batch.line_count),
        "dup_line_char_frac": dup_chars,
        "newline_word_ratio": ratio(batch.count("\n"), batch.word_count),
    }


def fineweb_checks(batch: TextBatch, rules: FineWebRules) -> list[Check]:
    m = fineweb_measures(batch, rules)
    return [
        ("fineweb:line-punct-ratio", m["line_punct_frac"] < rules.min_line_punct_frac),
        ("fineweb:short-line-ratio", m["short_line_frac"] > rules.max_short_line_frac),
        ("fineweb:dup-line-char-frac", m["dup_line_char_frac"] > rules.max_dup_line_char_frac),
        ("fineweb:list-ratio", m["newline_word_ratio"] > rules.max_newline_word_ratio),
    ]
