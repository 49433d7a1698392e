"""Deterministic synthetic pretraining corpus with planted duplicates and junk, for scale benchmarks.

Every document is a pure function of (seed, document index): all random draws come from a
counter-based hash (SplitMix64 of `index << 20 | position` under a per-purpose key), so

* any set of documents can be generated vectorised, in any order, by any process;
* a planted copy can point at any earlier document: its original's words are simply recomputed;
* the corpus is prefix-stable: the first 100k documents of N=1M are the N=100k corpus (only the
  split into files differs).

Documents are Zipf-Mandelbrot words (186 common English words at the top ranks, ~40% of tokens,
then 100k pronounceable pseudo-words, longer the rarer, and some numbers; mean word length 5.0) so
word 5-gram shingles repeat across documents about as in real text, in capitalised sentences of
6-26 words with commas and terminal punctuation, grouped into paragraphs. Lengths are lognormal
(median 300 words, mean ~450, ~2.8 KB of text), clipped to [60, 20000] words so clean documents
pass Gopher's 50-word minimum. Roles, drawn per document:

* 3% exact copies of an earlier clean document: verbatim, lowercased, whitespace-changed, or both
  (all equal under exact-dedup's `normalize: full`);
* 3% near copies: words of an earlier clean document substituted at a rate that aims at a target
  word-5-gram Jaccard drawn uniformly in [0.5, 1.0); the measured Jaccard is what the truth stores;
* 2% junk: repeated lines, very short, lorem ipsum, or symbol soup (for the heuristic filter);
* the rest: clean originals.

Texts are built without a Python loop per word: token ids (word, capitalisation, separator) index a
table of token strings with Arrow's `take`, and `binary_join` concatenates each document's tokens.
Only junk documents (2%) are built in Python, one string each.

Layout of a corpus folder (names starting with `_` or `.` are skipped by Thresher's input listing):

    part-00000.parquet ...     doc_id (string), text (string), source (string); zstd
    _truth/dups-00000.parquet  planted copies: doc_id, original_id, kind (exact|near), variant, jaccard
    _truth/junk-00000.parquet  planted junk: doc_id, junk (repeated-lines|short|lorem|symbols)
    _corpus.json               parameters and statistics; written last (its presence = complete)

`generate` reuses a complete corpus with the same parameters made by the same code (a hash of this
file is in `_corpus.json`) and otherwise replaces it.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 1  # bump when the output for a given seed changes
# A corpus is reused only if the code that made it is the code loaded now (hash of this file).
SOURCE_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
U64 = np.uint64
M64 = (1 << 64) - 1

# ---- corpus shape --------------------------------------------------------------------------------

P_JUNK, P_EXACT, P_NEAR = 0.02, 0.03, 0.03
LEN_MEDIAN, LEN_SIGMA, LEN_MIN, LEN_MAX = 300.0, 0.9, 60, 20_000
NEAR_J_MIN, NEAR_J_MAX = 0.5, 1.0
NGRAM = 5  # shingle size the truth's Jaccard uses (FineWeb's MinHash setting)
SENT_MIN, SENT_SPAN = 6, 21  # sentence lengths 6..26 words
P_COMMA, P_SEMICOLON = 0.07, 0.005
P_PARAGRAPH = 0.25  # a sentence end that also ends the paragraph
ORIGINAL_TRIES = 4  # candidates drawn for a copy's original (must be a clean document)
POS_BITS = 20  # token position inside a document in the hash counter (LEN_MAX < 2^20)
MAX_DOCS = 10**9  # ids are "d" + 9 digits
CHUNK_DOCS = 16_384  # documents generated (and written as one row group) at once
TARGET_FILE_BYTES = 256 << 20
EST_PARQUET_BYTES_PER_DOC = 1_450  # measured with zstd: sizes files at ~TARGET_FILE_BYTES

EXACT_VARIANTS = ("verbatim", "lowercase", "whitespace", "lowercase+whitespace")
JUNK_KINDS = ("repeated-lines", "short", "lorem", "symbols")
SOURCES = ("web", "news", "forum", "encyclopedia", "books")
SOURCE_WEIGHTS = (60, 15, 12, 8, 5)

# Separators that follow a token. Sentence ends are END + punct (". ", "? ", "! "), paragraph ends
# PARA + punct (".\n\n", ...); the last token of a document takes FINAL (no trailing whitespace).
# The "whitespace" variant of exact copies turns END + p into WIDE + p and FINAL into FINAL_NL.
SEPARATORS = (" ", ", ", "; ", ". ", "? ", "! ", ".\n\n", "?\n\n", "!\n\n", ".", ".  ", "?  ", "!  ", ".\n")
SEP_SPACE, SEP_COMMA, SEP_SEMI, SEP_END, SEP_PARA, SEP_FINAL, SEP_WIDE, SEP_FINAL_NL = 0, 1, 2, 3, 6, 9, 10, 13
NSEP = len(SEPARATORS)

# Salts: one independent random stream per purpose.
(S_ROLE, S_ORIG, S_LEN1, S_LEN2, S_WORD, S_SENT, S_NEAR_J, S_SUB, S_FORCE, S_VARIANT, S_JUNK,
 S_SOURCE) = range(1, 13)

# ---- vocabulary ----------------------------------------------------------------------------------

# The most frequent English words, roughly in frequency order: they take the top Zipf ranks, so
# Gopher's stop-word rule and mean-word-length rule see English-like statistics.
COMMON_WORDS_TEXT = """the of and to a in is that for it as was with be by on not he this are or his from at
which but have an had they you were their one all we can her has there been if more when will would
who so no she other its may these what them than some him time into only do out first also new could
most people then two over such like our any years about after made many did between should used where
those under well very even because through while before same work state three way being own much back
world part each use still here life both long good just great year must might since against during
city water house case place public number system small right however group however general days found
high point home without school country make another family within power end second given take often
never several large old since local form history law under government company few last set area
known order fact later four today less among course early several left around every though change
enough began down"""
COMMON_WORDS = COMMON_WORDS_TEXT.split()
VOCAB_SIZE = 100_000
ZIPF_S, ZIPF_Q = 1.0, 2.0  # Zipf-Mandelbrot p(r) ~ 1 / (r + q)^s
TABLE_BITS = 22  # inverse-CDF lookup table: 4M slots, every word gets >= 3 of them
NUMBER_EVERY = 50  # every 50th rank from 300 on is a number (~1% of tokens)

# Pseudo-words: syllables (onset, vowel, coda), a full onset only on the first syllable, a coda
# mostly at the end, sometimes an English suffix.
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y",
           "z", "br", "cr", "dr", "fr", "gr", "pr", "tr", "bl", "cl", "fl", "gl", "pl", "sl", "st", "sp",
           "sc", "sh", "ch", "th", "wh", "qu")
_INNER_ONSETS = ("b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "nd", "st", "nt", "rt")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ea", "ee", "ou", "io", "ie", "oa")
_CODAS = ("", "", "n", "r", "s", "t", "l", "m", "nd", "nt", "st", "rs", "ck", "ng", "th", "x", "ll")
_SUFFIXES = ("", "", "", "", "", "", "", "", "ing", "ed", "er", "ly", "tion", "ment", "ness", "able",
             "ity", "al", "ous", "ive", "s", "es")
LOREM_TEXT = """lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut
labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi
aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat
nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit
anim id est laborum"""
LOREM = LOREM_TEXT.split()
SYMBOL_CHARS = "#$%&*+=<>/\\|~^@!?[](){}_-:;.,0123456789xqzk"


@dataclass(frozen=True)
class Vocab:
    words: list[str]  # by rank
    table: np.ndarray  # int32, 2^TABLE_BITS slots: uniform slot -> word rank (inverse Zipf CDF)
    tokens: pa.Array  # token strings, id = (word * 2 + capitalised) * NSEP + separator


def _pseudo_words(n: int, rng: np.random.Generator, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        m = 2 * (n - len(out)) + 1000
        syll = rng.choice([1, 1, 2, 2, 2, 3, 3, 4], size=m)
        onset, inner = rng.integers(0, len(_ONSETS), m), rng.integers(0, len(_INNER_ONSETS), (m, 4))
        vowel, coda = rng.integers(0, len(_VOWELS), (m, 4)), rng.integers(0, len(_CODAS), m)
        suffix = rng.integers(0, len(_SUFFIXES), m)
        for i in range(m):
            w = _ONSETS[onset[i]] + _VOWELS[vowel[i, 0]]
            for k in range(1, syll[i]):
                w += _INNER_ONSETS[inner[i, k]] + _VOWELS[vowel[i, k]]
            w += _CODAS[coda[i]] + _SUFFIXES[suffix[i]]
            if 2 <= len(w) <= 16 and w not in seen:
                seen.add(w)
                out.append(w)
    return out[:n]


@lru_cache(maxsize=1)
def vocab() -> Vocab:
    """The fixed vocabulary (independent of the corpus seed), built once per process (~1 s)."""
    rng = np.random.default_rng(20260101)
    common = list(dict.fromkeys(COMMON_WORDS))
    pseudo = _pseudo_words(VOCAB_SIZE - len(common), rng, set(common))
    # Rarer words are longer, as in natural language: rank pseudo-words by length, with noise.
    noisy = np.array([len(w) for w in pseudo], dtype=np.float64) + rng.normal(0, 2.0, len(pseudo))
    pseudo = [pseudo[i] for i in np.argsort(noisy, kind="stable")]
    words = common + pseudo
    numbers = iter(dict.fromkeys(str(x) for x in rng.integers(1, 3000, size=20_000)))
    for r in range(300, VOCAB_SIZE, NUMBER_EVERY):
        words[r] = next(numbers, words[r])
    assert len(set(words)) == VOCAB_SIZE
    p = 1.0 / (np.arange(1, VOCAB_SIZE + 1) + ZIPF_Q) ** ZIPF_S
    cdf = np.cumsum(p / p.sum())
    slots = (np.arange(1 << TABLE_BITS) + 0.5) / (1 << TABLE_BITS)
    table = np.minimum(np.searchsorted(cdf, slots, side="right"), VOCAB_SIZE - 1).astype(np.int32)
    lower = pa.array(words, pa.string())
    forms = pa.concat_arrays([lower, pc.utf8_capitalize(lower)])  # [0, V): as is, [V, 2V): capitalised
    m = np.arange(2 * VOCAB_SIZE)  # m = word * 2 + capitalised -> its row in `forms`
    form_of = np.repeat((m % 2) * VOCAB_SIZE + m // 2, NSEP)
    sep_of = np.tile(np.arange(NSEP), 2 * VOCAB_SIZE)
    tokens = pc.binary_join_element_wise(
        forms.take(pa.array(form_of)), pa.array(SEPARATORS, pa.string()).take(pa.array(sep_of)), ""
    )
    return Vocab(words, table, tokens)


# ---- counter-based randomness ----------------------------------------------------------------------


def _splitmix_scalar(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def stream_key(seed: int, salt: int) -> int:
    return _splitmix_scalar(_splitmix_scalar(seed & M64) ^ (salt * 0xD1B54A32D192ED03 & M64))


def mix(counter: np.ndarray, seed: int, salt: int, consume: bool = False) -> np.ndarray:
    """SplitMix64 output for `counter` (64-bit ints) in the stream (seed, salt): uniform 64-bit
    values. `consume`: overwrite `counter` (a temporary) instead of copying it."""
    z = counter.view(U64) if consume and counter.dtype.itemsize == 8 else counter.astype(U64, copy=True)
    z *= U64(0x9E3779B97F4A7C15)
    z += U64(stream_key(seed, salt))
    z ^= z >> U64(30)
    z *= U64(0xBF58476D1CE4E5B9)
    z ^= z >> U64(27)
    z *= U64(0x94D049BB133111EB)
    z ^= z >> U64(31)
    return z


def uniform(h: np.ndarray) -> np.ndarray:
    return (h >> U64(11)).astype(np.float64) * (1.0 / (1 << 53))


# ---- per-document draws --------------------------------------------------------------------------

CLEAN, EXACT, NEAR, JUNK = 0, 1, 2, 3


def drawn_roles(idx: np.ndarray, seed: int) -> np.ndarray:
    """Role drawn for each index, before copies without a clean original fall back to clean."""
    u = uniform(mix(idx, seed, S_ROLE))
    role = np.full(len(idx), CLEAN, dtype=np.int8)
    role[u < P_JUNK + P_EXACT + P_NEAR] = NEAR
    role[u < P_JUNK + P_EXACT] = EXACT
    role[u < P_JUNK] = JUNK
    role[idx == 0] = CLEAN
    return role


def roles_and_originals(idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(role, original index or -1). A copy's original is uniform over the earlier documents whose
    drawn role is clean (the first of a few candidates); with none found the copy becomes clean."""
    role = drawn_roles(idx, seed)
    orig = np.full(len(idx), -1, dtype=np.int64)
    todo = np.flatnonzero((role == EXACT) | (role == NEAR))
    for t in range(ORIGINAL_TRIES):
        if not len(todo):
            break
        i = idx[todo]
        cand = (uniform(mix(i * ORIGINAL_TRIES + t, seed, S_ORIG)) * i).astype(np.int64)
        ok = drawn_roles(cand, seed) == CLEAN
        orig[todo[ok]] = cand[ok]
        todo = todo[~ok]
    role[todo] = CLEAN
    return role, orig


def doc_lengths(idx: np.ndarray, seed: int) -> np.ndarray:
    """Words of a clean document: lognormal (Box-Muller normal from two hash streams), clipped."""
    u1 = np.maximum(uniform(mix(idx, seed, S_LEN1)), 1e-300)
    u2 = uniform(mix(idx, seed, S_LEN2))
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    n = np.exp(np.log(LEN_MEDIAN) + LEN_SIGMA * z)
    return np.clip(n, LEN_MIN, LEN_MAX).astype(np.int64)


@dataclass
class Tokens:
    """Flat tokens of a batch of documents: document i owns [offsets[i], offsets[i+1])."""

    words: np.ndarray  # int32 word rank
    sep: np.ndarray  # int8 separator after the word
    cap: np.ndarray  # bool: capitalised (sentence start)
    offsets: np.ndarray  # int64, len docs + 1


def _offsets(lengths: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def clean_tokens(src: np.ndarray, seed: int) -> Tokens:
    """The tokens of clean documents `src` (what a copy's original looks like, wherever it is)."""
    v = vocab()
    lengths = doc_lengths(src, seed)
    off = _offsets(lengths)
    total = int(off[-1])
    pos = np.arange(total, dtype=np.int64) - np.repeat(off[:-1], lengths)
    pos += np.repeat(src << POS_BITS, lengths)  # the counter: document << 20 | position
    h = mix(pos, seed, S_WORD, consume=True)
    # Masked to < 2^63, so viewing as int64 (free) is exact.
    words = v.table[(h & U64((1 << TABLE_BITS) - 1)).view(np.int64)]
    punct = ((h >> U64(40)) & U64(1023)).view(np.int64)  # 10 more bits of the same draw
    del h, pos
    sep = np.zeros(total, dtype=np.int8)
    sep[punct < int(1024 * (P_COMMA + P_SEMICOLON))] = SEP_SEMI
    sep[punct < int(1024 * P_COMMA)] = SEP_COMMA
    del punct
    ends, kind = _sentence_ends(src, lengths, off, seed)
    sep[ends] = kind
    last = off[1:] - 1
    sep[last] = SEP_FINAL  # every document ends with "."
    cap = np.zeros(total, dtype=bool)
    cap[1:] = sep[:-1] >= SEP_END
    cap[off[:-1]] = True
    return Tokens(words, sep, cap, off)


def _sentence_ends(src: np.ndarray, lengths: np.ndarray, off: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token positions that end a sentence, and their separator. Sentence lengths are drawn per
    (document, sentence number); enough are drawn to cover the longest possible document."""
    per_doc = lengths // SENT_MIN + 1
    soff = _offsets(per_doc)
    k = np.arange(int(soff[-1]), dtype=np.int64) - np.repeat(soff[:-1], per_doc)
    h = mix(np.repeat(src << POS_BITS, per_doc) + k, seed, S_SENT)
    size = SENT_MIN + (h % U64(SENT_SPAN)).astype(np.int64)
    cum = np.cumsum(size)
    end_in_doc = cum - np.repeat(cum[soff[:-1]] - size[soff[:-1]], per_doc)  # exclusive end
    inside = end_in_doc <= np.repeat(lengths, per_doc)
    r = ((h >> U64(32)) & U64(0xFFFF)).astype(np.int64)
    punct = np.where(r < 0.88 * 65536, 0, np.where(r < 0.96 * 65536, 1, 2))
    para = ((h >> U64(48)) & U64(0xFF)).astype(np.int64) < P_PARAGRAPH * 256
    kind = (np.where(para, SEP_PARA, SEP_END) + punct).astype(np.int8)
    where = np.repeat(off[:-1], per_doc) + end_in_doc - 1
    return where[inside], kind[inside]


def substitute(tok: Tokens, doc_rows: np.ndarray, idx: np.ndarray, seed: int) -> np.ndarray:
    """Near copies: replace words of documents `doc_rows` (rows of `tok`; `idx` their own corpus
    indices) in place, aiming at a Jaccard drawn in [NEAR_J_MIN, NEAR_J_MAX). Returns the target
    per document (the truth stores the measured one)."""
    v = vocab()
    target = NEAR_J_MIN + (NEAR_J_MAX - NEAR_J_MIN) * uniform(mix(idx, seed, S_NEAR_J))
    # A shingle survives when none of its NGRAM words changes: q = (1 - r)^n. With equal sizes,
    # J = q / (2 - q), so q = 2J / (1 + J). Exactly round(r * length) words change (at least one,
    # so a near copy never equals its original), at random distinct positions: the k with the
    # smallest hash. A fixed count keeps the measured Jaccard close to the target.
    rate = 1.0 - (2.0 * target / (1.0 + target)) ** (1.0 / NGRAM)
    lengths = np.diff(tok.offsets)[doc_rows]
    changes = np.maximum(1, np.rint(rate * lengths)).astype(np.int64)
    flat = _ranges(tok.offsets, doc_rows)
    local = _offsets(lengths)
    pos = np.arange(len(flat), dtype=np.int64) - np.repeat(local[:-1], lengths)
    row = np.repeat(np.arange(len(doc_rows)), lengths)
    h = mix(np.repeat(idx << POS_BITS, lengths) + pos, seed, S_SUB)
    order = np.lexsort((h, row))  # per document, its positions in random order
    rank = np.arange(len(flat)) - local[row]  # row[order] == row: documents stay contiguous
    at = order[rank < changes[row]]
    new = v.table[((h[at] >> U64(20)) & U64((1 << TABLE_BITS) - 1)).astype(np.int64)]
    old = tok.words[flat[at]]
    tok.words[flat[at]] = np.where(new == old, (old + 1) % VOCAB_SIZE, new)  # always a different word
    return target


def shingle_jaccard(a: np.ndarray, b: np.ndarray, offsets: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """Word-n-gram set Jaccard of document pairs (a_i, b_i), both laid out by `offsets` (equal
    lengths). Shingles are hashed to 48 bits (collisions inside one pair: ~1e-9 at 450 words)."""
    docs = len(offsets) - 1
    assert docs < 1 << 16  # the document number fills the top 16 bits of each key
    keys_a = _pair_shingle_keys(a.astype(U64), offsets, n)
    keys_b = _pair_shingle_keys(b.astype(U64), offsets, n)

    def distinct_per_doc(keys: np.ndarray) -> np.ndarray:
        keys = np.sort(keys)
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        return np.bincount((keys[first] >> U64(48)).astype(np.int64), minlength=docs)

    na, nb = distinct_per_doc(keys_a), distinct_per_doc(keys_b)
    union = distinct_per_doc(np.concatenate([keys_a, keys_b]))
    return (na + nb - union) / np.maximum(union, 1)


def _pair_shingle_keys(words: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    total = len(words)
    acc = np.zeros(max(total - n + 1, 0), dtype=U64)
    for k in range(n):
        acc = acc * U64(0x100000001B3) + words[k : total - n + 1 + k] + U64(1)
    acc = mix(acc, 0, 99)
    lengths = np.diff(offsets)
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)[: len(acc)]
    pos = np.arange(len(acc), dtype=np.int64) - offsets[doc]
    ok = pos <= lengths[doc] - n
    return (doc[ok].astype(U64) << U64(48)) | (acc[ok] >> U64(16))


def exact_variants(tok: Tokens, rows: np.ndarray, variants: np.ndarray) -> None:
    """Exact copies' perturbations, in place on their tokens: `lowercase` drops the capitals,
    `whitespace` widens sentence ends to two spaces and ends the text with a newline. All variants
    are equal to the original under exact-dedup's `normalize: full` and have the same shingles."""
    for want, change in ((1, "lower"), (2, "space")):
        hit = rows[(variants & want) != 0]  # variant 1 lowercase, 2 whitespace, 3 both
        if not len(hit):
            continue
        at = _ranges(tok.offsets, hit)
        if change == "lower":
            tok.cap[at] = False
        else:
            sep = tok.sep[at]
            end = (sep >= SEP_END) & (sep < SEP_PARA)
            sep[end] += SEP_WIDE - SEP_END
            sep[sep == SEP_FINAL] = SEP_FINAL_NL
            tok.sep[at] = sep


def render(tok: Tokens, inserts: np.ndarray | None = None, texts: list[str] | None = None) -> pa.Array:
    """Token arrays to one string per document: Arrow `take` of the token strings, then
    `binary_join` per document. `texts` (whole documents, e.g. junk) are placed before the token
    documents numbered `inserts` (sorted), each as a one-token document: the result is already in
    corpus order, with no second copy of the text."""
    v = vocab()
    ids = (tok.words.astype(np.int32) * 2 + tok.cap) * NSEP + tok.sep
    lengths = np.diff(tok.offsets)
    table = v.tokens
    if texts:
        assert inserts is not None and len(inserts) == len(texts)
        table = pa.concat_arrays([table, pa.array(texts, pa.string())])
        ids = np.insert(ids, tok.offsets[inserts], len(v.tokens) + np.arange(len(texts), dtype=np.int32))
        lengths = np.insert(lengths, inserts, 1)
    strings = table.take(pa.array(ids, pa.int32()))
    lists = pa.ListArray.from_arrays(pa.array(_offsets(lengths).astype(np.int32)), strings)
    return pc.binary_join(lists, "")


def junk_text(i: int, seed: int) -> tuple[str, str]:
    """(kind, text) of a junk document, built in Python (2% of documents)."""
    rnd = random.Random(stream_key(seed, S_JUNK) ^ i)
    kind = JUNK_KINDS[rnd.randrange(len(JUNK_KINDS))]
    words = vocab().words
    top = 3000

    def sentence(lo: int, hi: int, pool: list[str], limit: int) -> str:
        s = " ".join(pool[rnd.randrange(limit)] for _ in range(rnd.randint(lo, hi)))
        return s[:1].upper() + s[1:] + "."

    if kind == "repeated-lines":
        line = sentence(6, 12, words, top)
        text = "\n".join([line] * rnd.randint(12, 40))
    elif kind == "short":
        text = " ".join(sentence(4, 12, words, top) for _ in range(rnd.randint(2, 3)))
    elif kind == "lorem":
        body = " ".join(sentence(6, 16, LOREM, len(LOREM)) for _ in range(rnd.randint(5, 20)))
        text = "Lorem ipsum dolor sit amet, " + body[0].lower() + body[1:]
    else:
        chars = rnd.choices(SYMBOL_CHARS, k=rnd.randint(300, 1500))
        for at in sorted(rnd.sample(range(1, len(chars) - 1), len(chars) // 5), reverse=True):
            chars.insert(at, " ")
        text = "".join(chars)
    return kind, text


def doc_ids(idx: np.ndarray) -> pa.Array:
    """'d' + 9 digits, built from the digits as bytes (no Python string per document)."""
    pow10 = 10 ** np.arange(8, -1, -1, dtype=np.int64)
    buf = np.empty((len(idx), 10), dtype=np.uint8)
    buf[:, 0] = ord("d")
    buf[:, 1:] = (idx[:, None] // pow10[None, :]) % 10 + ord("0")
    offsets = (np.arange(len(idx) + 1, dtype=np.int32) * 10).tobytes()
    return pa.StringArray.from_buffers(len(idx), pa.py_buffer(offsets), pa.py_buffer(buf.tobytes()))


def sources(idx: np.ndarray, seed: int) -> pa.Array:
    cum = np.cumsum(SOURCE_WEIGHTS)
    which = np.searchsorted(cum, (mix(idx, seed, S_SOURCE) % U64(cum[-1])).astype(np.int64), side="right")
    return pa.array(SOURCES, pa.string()).take(pa.array(which))


# ---- one chunk -----------------------------------------------------------------------------------

DOC_SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("source", pa.string())])
DUPS_SCHEMA = pa.schema([("doc_id", pa.string()), ("original_id", pa.string()), ("kind", pa.string()),
                         ("variant", pa.string()), ("jaccard", pa.float64())])
JUNK_SCHEMA = pa.schema([("doc_id", pa.string()), ("junk", pa.string())])


@dataclass
class Chunk:
    docs: pa.Table
    dups: pa.Table
    junk: pa.Table


def generate_chunk(start: int, stop: int, seed: int) -> Chunk:
    """Documents [start, stop) of the corpus for `seed`, with their ground truth."""
    idx = np.arange(start, stop, dtype=np.int64)
    role, orig = roles_and_originals(idx, seed)
    body = np.flatnonzero(role != JUNK)  # rows built from clean tokens (clean docs and copies)
    tok = clean_tokens(np.where(orig >= 0, orig, idx)[body], seed)
    near = np.flatnonzero(role[body] == NEAR)  # rows of `tok`
    jaccard = np.zeros(0)
    if len(near):
        # The truth stores the measured Jaccard: the near copies' words before and after edits.
        pick = _ranges(tok.offsets, near)
        before = tok.words[pick]
        substitute(tok, near, idx[body][near], seed)
        jaccard = shingle_jaccard(before, tok.words[pick], _offsets(np.diff(tok.offsets)[near]))

    exact = np.flatnonzero(role == EXACT)
    variant = (mix(idx[exact], seed, S_VARIANT) % U64(len(EXACT_VARIANTS))).astype(np.int64)
    exact_variants(tok, np.searchsorted(body, exact), variant)
    junk_rows = np.flatnonzero(role == JUNK)
    junk = [junk_text(int(i), seed) for i in idx[junk_rows]]
    # Each junk row goes before the first body row after it (the number of body rows before it).
    texts = render(tok, np.searchsorted(body, junk_rows), [text for _, text in junk])

    ids = doc_ids(idx)
    docs = pa.Table.from_arrays([ids, texts, sources(idx, seed)], schema=DOC_SCHEMA)
    copies = np.flatnonzero((role == EXACT) | (role == NEAR))  # ascending, like `exact` and body[near]
    kind = np.where(role[copies] == EXACT, "exact", "near").astype(object)
    names = np.where(role[copies] == EXACT, "", "substitution").astype(object)
    names[np.searchsorted(copies, exact)] = np.array(EXACT_VARIANTS, dtype=object)[variant]
    true_j = np.ones(len(copies))
    true_j[np.searchsorted(copies, body[near])] = jaccard
    dups = pa.Table.from_arrays(
        [ids.take(pa.array(copies)), doc_ids(orig[copies]), pa.array(kind.tolist(), pa.string()),
         pa.array(names.tolist(), pa.string()), pa.array(true_j, pa.float64())],
        schema=DUPS_SCHEMA,
    )
    junk_table = pa.Table.from_arrays(
        [ids.take(pa.array(junk_rows)), pa.array([k for k, _ in junk], pa.string())], schema=JUNK_SCHEMA
    )
    return Chunk(docs, dups, junk_table)


def _ranges(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated ranges offsets[r]..offsets[r+1] of the given rows (vectorised)."""
    lengths = offsets[rows + 1] - offsets[rows]
    local = _offsets(lengths)
    return np.repeat(offsets[rows] - local[:-1], lengths) + np.arange(int(local[-1]), dtype=np.int64)


# ---- files -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusParams:
    docs: int
    seed: int
    files: int
    version: int = GENERATOR_VERSION


def default_files(docs: int) -> int:
    """~256 MB Parquet files; at least 2 (so ingest has work for 2 ranks) unless tiny."""
    by_size = math.ceil(docs * EST_PARQUET_BYTES_PER_DOC / TARGET_FILE_BYTES)
    return max(by_size, 2 if docs >= 2_000 else 1)


def file_range(params: CorpusParams, k: int) -> tuple[int, int]:
    return k * params.docs // params.files, (k + 1) * params.docs // params.files


def write_file(out: Path, params: CorpusParams, k: int) -> dict[str, int]:
    """Write part k (and its truth parts) atomically: temporary hidden names, then renames."""
    lo, hi = file_range(params, k)
    name = f"part-{k:05d}.parquet"
    tmp = out / f".{name}.tmp"
    stats = {"docs": hi - lo, "text_bytes": 0, "exact": 0, "near": 0, "junk": 0}
    dups, junk = [], []
    with pq.ParquetWriter(tmp, DOC_SCHEMA, compression="zstd", use_dictionary=["source"],
                          write_statistics=["doc_id"]) as writer:
        for a in range(lo, hi, CHUNK_DOCS):
            chunk = generate_chunk(a, min(a + CHUNK_DOCS, hi), params.seed)
            writer.write_table(chunk.docs, row_group_size=CHUNK_DOCS)
            stats["text_bytes"] += int(pc.sum(pc.binary_length(chunk.docs.column("text"))).as_py() or 0)
            dups.append(chunk.dups)
            junk.append(chunk.junk)
    for folder, prefix, tables, schema in ((out / "_truth", "dups", dups, DUPS_SCHEMA),
                                           (out / "_truth", "junk", junk, JUNK_SCHEMA)):
        folder.mkdir(exist_ok=True)
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        part = folder / f"{prefix}-{k:05d}.parquet"
        pq.write_table(table, folder / f".{part.name}.tmp", compression="zstd")
        os.replace(folder / f".{part.name}.tmp", part)
    os.replace(tmp, out / name)
    counts = pa.concat_tables(dups).column("kind").value_counts().to_pylist() if dups else []
    for c in counts:
        stats[c["values"]] = c["counts"]
    stats["junk"] = sum(t.num_rows for t in junk)
    stats["parquet_bytes"] = (out / name).stat().st_size
    return stats


def _write_file_job(args: tuple[str, CorpusParams, int]) -> dict[str, int]:
    return write_file(Path(args[0]), args[1], args[2])


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / "_corpus.json"
    return json.loads(path.read_text()) if path.exists() else None


def generate(out: Path, docs: int, seed: int = 0, files: int | None = None, workers: int | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Generate (or, when complete with the same parameters, reuse) a corpus; returns its manifest."""
    if not 0 < docs <= MAX_DOCS:
        raise ValueError(f"--docs must be in 1..{MAX_DOCS:,}")
    params = CorpusParams(docs, seed, files or default_files(docs))
    manifest = read_manifest(out)
    source = SOURCE_DIGEST
    if manifest and manifest.get("params") == asdict(params) and manifest.get("source") == source:
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("part-*.parquet"), *out.glob("_truth/*.parquet"), out / "_corpus.json"]:
        old.unlink(missing_ok=True)  # a different corpus was here: never mix two
    vocab()  # build once before forking: workers inherit it
    started, cpu0 = time.perf_counter(), _cpu()
    jobs = [(str(out), params, k) for k in range(params.files)]
    workers = max(1, min(workers or os.cpu_count() or 1, params.files))
    totals: dict[str, int] = {}
    if workers == 1:
        results = map(_write_file_job, jobs)
    else:
        pool = mp.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_write_file_job, jobs)
    for n, stats in enumerate(results, 1):
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + value
        if progress:
            print(f"  {n}/{params.files} files, {totals['docs']:,} documents", flush=True)
    if workers > 1:
        pool.close()
        pool.join()
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu0
    manifest = {"params": asdict(params), "source": source, "stats": totals, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2)}
    tmp = out / "._corpus.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "_corpus.json")
    return manifest


def _cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def read_truth(out: Path) -> tuple[pa.Table, pa.Table]:
    """(planted duplicates, planted junk) of a corpus folder."""
    dups = [pq.read_table(p) for p in sorted((out / "_truth").glob("dups-*.parquet"))]
    junk = [pq.read_table(p) for p in sorted((out / "_truth").glob("junk-*.parquet"))]
    return (pa.concat_tables(dups) if dups else DUPS_SCHEMA.empty_table(),
            pa.concat_tables(junk) if junk else JUNK_SCHEMA.empty_table())
