"""The math of MinHash deduplication, vectorised with numpy: shingles, signatures, bands, components.

Nothing here loops in Python per word, shingle or hash. A batch of documents is normalised (ASCII
documents with one byte table that lowercases and turns separators into spaces; documents with
other bytes by Arrow: Unicode NFKC (NFC when `lowercase` is off), lowercase, separators to spaces
by a regular expression), and units are found with byte masks:

- `words` tokenizer: a unit is a run of non-separator characters (FineWeb's words);
- `chars`: every non-separator character is a unit (character n-grams);
- `auto` (the default): words, except that each character of a script written without spaces
  (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar, Yi, Bopomofo) is a unit of its own, and so
  is each Hangul syllable in a document whose Hangul runs average more than
  KOREAN_SPACELESS_RUN syllables (Korean written without spaces). Space-separated text (English,
  and any document without such characters) gets exactly the `words` units.

Each unit is hashed straight from the UTF-8 bytes with a polynomial prefix sum: the hash of bytes
[s, e) is (G[e] - G[s]) * P^-s, with G the running sum of (byte+1) * P^t mod 2^64, so equal units
hash equally wherever they are. A unit n-gram ("shingle") is sum_k M_k * unit_hash[i+k] mod 2^64,
mixed. MinHash then evaluates all permutations h_k(x) = (a_k x + b_k) mod 2^64 (multiply-add-shift,
strongly universal on 32-bit keys) as one (permutations x shingles) matrix per block and takes
per-document minima with `np.minimum.reduceat`.

A document with no unit at all (empty, whitespace, or with `lowercase` only punctuation, symbols
and emoji) has no shingle: its signature is all EMPTY (`has_shingles` is False) and the stage must
keep it out of the LSH buckets, or all such documents would be one cluster. A document with fewer
than `ngram` units is one shingle of all its units.

Memory is bounded by construction: byte work happens in chunks of at most `SPAN_CHUNK` bytes and the
permutation matrix in blocks of `MATRIX_BLOCK` shingles, so a 10 MB document costs a few arrays of
its word count, never (shingles x permutations).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

U64 = np.uint64
# Any odd 64-bit constant is invertible mod 2^64; this one is FNV's prime times a large odd mixer.
POLY_BASE = 0x100000001B3 * 0x9E3779B97F4A7C15 % (1 << 64) | 1
POLY_BASE_INV = pow(POLY_BASE, -1, 1 << 64)
# Position multipliers of the words inside a shingle (odd, fixed: shingle hashes never change).
_RNG = np.random.default_rng(0x5EED)
SHINGLE_MULTIPLIERS = _RNG.integers(0, 1 << 63, size=32, dtype=np.uint64) * U64(2) + U64(1)
SPAN_CHUNK = 1 << 20  # bytes hashed per prefix-sum pass; longer single words use xxh3
MATRIX_BLOCK = 4096  # shingles per (permutations x shingles) block: ~3.5 MB of uint64 for 112 hashes
BATCH_BYTES = 8 << 20  # text bytes normalised and shingled at once
SPACE = 32
ASCII_WHITESPACE = "\t\n\x0b\x0c\r "
# Word separators with `lowercase`: Unicode separators, punctuation, symbols, ASCII whitespace
# (RE2's \s) and vertical tab. Without it only whitespace separates words.
SEPARATORS_RE = r"[\s\x0b\p{Z}\p{P}\p{S}]+"
WHITESPACE_RE = r"[\s\x0b\p{Z}]+"


TOKENIZERS = ("auto", "words", "chars")
EMPTY = np.uint32(0xFFFFFFFF)  # every value of the signature of a document without shingles
# Scripts written without spaces between words (code point ranges, inclusive): one unit per character.
NO_SPACE_SCRIPTS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK and Kangxi radicals
    (0x3005, 0x3007),  # ideographic iteration and closing marks, ideographic zero
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x303C),  # kana repeat marks
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x31A0, 0x31FF),  # Bopomofo extended, CJK strokes, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)
HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF))
KOREAN_SPACELESS_RUN = 8  # mean Hangul syllables per run above which a document has no spaces
_SCRIPT_BOUNDS = np.array([x for lo, hi in NO_SPACE_SCRIPTS for x in (lo, hi + 1)], dtype=np.int64)
_HANGUL_BOUNDS = np.array([x for lo, hi in HANGUL for x in (lo, hi + 1)], dtype=np.int64)


def _ascii_table(lowercase: bool) -> np.ndarray:
    """Byte -> byte map of ASCII: separators become spaces (with `lowercase`, punctuation and
    symbols too: string.punctuation is exactly the ASCII characters of Unicode categories P and S)
    and, with `lowercase`, A-Z become a-z. Bytes >= 0x80 map to themselves."""
    table = np.arange(256, dtype=np.uint8)
    for ch in ASCII_WHITESPACE + (string.punctuation if lowercase else ""):
        table[ord(ch)] = SPACE
    if lowercase:
        table[65:91] += 32
    return table


ASCII_SEPARATORS = {True: _ascii_table(True), False: _ascii_table(False)}


# ---- text to bytes ---------------------------------------------------------------------------


def normalize_for_shingles(texts: pa.Array, lowercase: bool) -> pa.Array:
    """Texts ready for units: every separator becomes one or more ASCII spaces, so units are
    found on bytes. With `lowercase`: Unicode NFKC, lowercase, and punctuation and symbols are
    separators; without it: NFC, and only whitespace separates. ASCII documents (NFKC and NFC
    leave them unchanged) are mapped with one byte table, the others by Arrow."""
    values, offsets = utf8_buffer(texts)
    lo, hi = int(offsets[0]), int(offsets[-1])
    mapped = ASCII_SEPARATORS[lowercase][values[lo:hi]]
    offsets = offsets - lo
    out = pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(mapped)]
    )
    non_ascii_bytes = np.flatnonzero(mapped >= 0x80)
    if not len(non_ascii_bytes):
        return out
    docs = np.unique(np.searchsorted(offsets, non_ascii_bytes, side="right") - 1)
    mask = np.zeros(len(offsets) - 1, dtype=bool)
    mask[docs] = True
    rest = texts.cast(pa.large_string()).filter(pa.array(mask))
    rest = pc.utf8_normalize(rest, "NFKC" if lowercase else "NFC")
    if lowercase:
        rest = pc.utf8_lower(rest)
    fixed = pc.replace_substring_regex(rest, SEPARATORS_RE if lowercase else WHITESPACE_RE, " ")
    return pc.replace_with_mask(out, pa.array(mask), fixed)


def unit_starts(values: np.ndarray, offsets: np.ndarray, tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
    """Characters that are units of their own (see the module docstring): their first byte
    positions and byte lengths, sorted. `values` are normalised bytes (separators are spaces)."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {', '.join(TOKENIZERS)}")
    lo, hi = int(offsets[0]), int(offsets[-1])
    v = values[lo:hi]
    if tokenizer == "words":
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if tokenizer == "chars":
        leads = np.flatnonzero((v != SPACE) & ((v & 0xC0) != 0x80))
    else:
        leads = np.flatnonzero(v >= 0xE0)  # every no-space script lies beyond U+07FF
    if not len(leads):
        return leads + lo, leads
    b0 = v[leads].astype(np.int32)
    length = (b0 >= 0xC0).astype(np.int64) + (b0 >= 0xE0) + (b0 >= 0xF0) + 1
    if tokenizer == "auto":
        cps = _decode(v, leads, b0)
        own = (np.searchsorted(_SCRIPT_BOUNDS, cps, side="right") & 1) == 1
        hangul = (np.searchsorted(_HANGUL_BOUNDS, cps, side="right") & 1) == 1
        if hangul.any():
            own |= hangul & _spaceless_korean(leads, hangul, length, offsets - lo)
        leads, length = leads[own], length[own]
    return leads + lo, length


def _decode(v: np.ndarray, leads: np.ndarray, b0: np.ndarray) -> np.ndarray:
    """Code points of the 3- and 4-byte UTF-8 sequences at `leads` (first bytes `b0`)."""
    b1, b2, b3 = (v.take(leads + k, mode="clip").astype(np.int32) & 0x3F for k in (1, 2, 3))
    three = ((b0 & 0x0F) << 12) | (b1 << 6) | b2
    four = ((b0 & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3
    return np.where(b0 >= 0xF0, four, three)


def _spaceless_korean(leads: np.ndarray, hangul: np.ndarray, length: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per Hangul character (True in `hangul`): its document's Hangul runs (characters one right
    after the other) average more than KOREAN_SPACELESS_RUN characters."""
    pos, size = leads[hangul], length[hangul]
    doc = np.searchsorted(offsets, pos, side="right") - 1
    starts_run = np.ones(len(pos), dtype=bool)
    starts_run[1:] = (pos[1:] != pos[:-1] + size[:-1]) | (doc[1:] != doc[:-1])
    n_docs = len(offsets) - 1
    chars = np.bincount(doc, minlength=n_docs)
    runs = np.bincount(doc[starts_run], minlength=n_docs)
    spaceless = chars > KOREAN_SPACELESS_RUN * np.maximum(runs, 1)
    out = np.zeros(len(leads), dtype=bool)
    out[np.flatnonzero(hangul)] = spaceless[doc]
    return out


def utf8_buffer(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The bytes (uint8) and the int64 offsets (len n+1) of a string array, zero-copy where possible."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    if not pa.types.is_large_string(texts.type):
        texts = texts.cast(pa.large_string())
    n = len(texts)
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64, count=texts.offset + n + 1)[texts.offset :]
    data = texts.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return values, offsets


def word_spans(
    values: np.ndarray, offsets: np.ndarray, own: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte [start, end) of every unit (maximal run of non-space bytes, and each character of
    `own` = (first byte positions, byte lengths) alone) and units per document."""
    lo, hi = int(offsets[0]), int(offsets[-1])
    v = values[lo:hi]
    n = hi - lo
    is_char = v != SPACE
    doc_starts = offsets[:-1] - lo
    doc_ends = offsets[1:] - lo
    prev_space = np.empty(n, dtype=bool)
    next_space = np.empty(n, dtype=bool)
    if n:
        prev_space[0] = next_space[-1] = True
        np.equal(v[:-1], SPACE, out=prev_space[1:])
        np.equal(v[1:], SPACE, out=next_space[:-1])
        prev_space[doc_starts[doc_starts < n]] = True  # a document starts a word, whatever precedes it
        next_space[doc_ends[doc_ends > 0] - 1] = True
    if own is not None and len(own[0]):
        first, last = own[0] - lo, own[0] - lo + own[1] - 1
        prev_space[first] = True  # a unit starts at an own character and right after it
        prev_space[last[last + 1 < n] + 1] = True
        next_space[last] = True  # and ends at its last byte and right before it
        next_space[first[first > 0] - 1] = True
    starts = np.flatnonzero(is_char & prev_space) + lo
    ends = np.flatnonzero(is_char & next_space) + (lo + 1)
    words_per_doc = np.diff(np.searchsorted(starts, offsets))
    return starts, ends, words_per_doc


# ---- hashing -----------------------------------------------------------------------------------


def shingle_keys(
    word_hash: np.ndarray, words_per_doc: np.ndarray, ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """32-bit key (as uint64) of every unit n-gram in document order, and the document of each.

    key = fmix(sum_k M_k * word_hash[i + k]) >> 32. Sums run over contiguous slices of the whole
    batch's units; windows that cross a document end are then dropped. A document with fewer than
    `ngram` units is one shingle of all its units; a document without units has no shingle."""
    m = words_per_doc.astype(np.int64)
    count = np.where(m > 0, np.maximum(m - ngram + 1, 1), 0)
    doc_of = np.repeat(np.arange(len(m)), count)
    keys = np.zeros(len(doc_of), dtype=U64)
    word_end = np.cumsum(m)
    word_start = word_end - m
    first_shingle = np.cumsum(count) - count
    short = (m > 0) & (m < ngram)
    windows = len(word_hash) - ngram + 1
    if windows > 0:
        acc = word_hash[:windows] * SHINGLE_MULTIPLIERS[0]
        for k in range(1, ngram):
            acc += word_hash[k : k + windows] * SHINGLE_MULTIPLIERS[k]
        inside = np.ones(windows, dtype=bool)
        for back in range(1, ngram):  # windows starting in the last ngram-1 words of a document
            j = word_end - back
            inside[j[(j >= word_start) & (j < windows)]] = False
        is_long_shingle = np.ones(len(doc_of), dtype=bool)
        is_long_shingle[first_shingle[short]] = False
        keys[is_long_shingle] = acc[inside]
    if short.any():
        first, size = word_start[short], m[short]
        acc = np.zeros(len(first), dtype=U64)
        for k in range(ngram - 1):
            present = k < size
            acc[present] += word_hash[first[present] + k] * SHINGLE_MULTIPLIERS[k]
        keys[first_shingle[short]] = acc
    return fmix64(keys) >> U64(32), doc_of


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: spreads every input bit over the output."""
    h ^= h >> U64(33)
    h *= U64(0xFF51AFD7ED558CCD)
    h ^= h >> U64(33)
    h *= U64(0xC4CEB9FE1A85EC53)
    h ^= h >> U64(33)
    return h


@lru_cache(maxsize=1)
def _powers() -> tuple[np.ndarray, np.ndarray]:
    """P^t and P^-t mod 2^64 for t in [0, SPAN_CHUNK]."""
    base = np.full(SPAN_CHUNK + 1, POLY_BASE, dtype=U64)
    base[0] = 1
    inv = np.full(SPAN_CHUNK + 1, POLY_BASE_INV, dtype=U64)
    inv[0] = 1
    return np.cumprod(base), np.cumprod(inv)


def span_hashes(values: np.ndarray, span_start: np.ndarray, span_end: np.ndarray) -> np.ndarray:
    """64-bit hash of the bytes of each span; spans must be sorted by start and by end.

    Equal byte strings get equal hashes wherever they are. Spans longer than SPAN_CHUNK (huge
    "words") are hashed one by one with xxh3; the choice depends only on the length, so it is
    consistent across documents."""
    out = np.empty(len(span_start), dtype=U64)
    ppow, pinv = _powers()
    i, total = 0, len(span_start)
    while i < total:
        lo = int(span_start[i])
        j = int(np.searchsorted(span_end, lo + SPAN_CHUNK, side="right"))
        if j <= i:  # a single span longer than a chunk
            out[i] = xxhash.xxh3_64_intdigest(values[lo : int(span_end[i])].tobytes())
            i += 1
            continue
        hi = int(span_end[j - 1])
        prefix = np.zeros(hi - lo + 1, dtype=U64)
        chunk = values[lo:hi].astype(U64)
        chunk += U64(1)  # so that a trailing zero byte still changes the hash
        chunk *= ppow[: hi - lo]
        np.cumsum(chunk, out=prefix[1:])
        s = span_start[i:j] - lo
        raw = prefix[span_end[i:j] - lo] - prefix[s]
        raw *= pinv[s]
        out[i:j] = fmix64(raw)
        i = j
    return out


def minhash_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers (odd) and offsets of the hash family, (num_perm, 1) each, fixed by the seed."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(np.uint64).max
    a = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True) | U64(1)
    b = rng.integers(0, top, size=num_perm, dtype=np.uint64, endpoint=True)
    return a.reshape(-1, 1), b.reshape(-1, 1)


def update_minima(
    minima: np.ndarray, keys: np.ndarray, doc_of: np.ndarray, a: np.ndarray, b: np.ndarray
) -> None:
    """minima[:, d] = min(minima[:, d], min over d's keys of a*key+b mod 2^64), in blocks.

    `minima` is (num_perm, docs) uint64; `keys` are 32-bit values (as uint64) sorted by `doc_of`."""
    buf = np.empty((len(a), MATRIX_BLOCK), dtype=U64)
    for i in range(0, len(keys), MATRIX_BLOCK):
        x = keys[i : i + MATRIX_BLOCK]
        d = doc_of[i : i + MATRIX_BLOCK]
        block = buf[:, : len(x)]
        np.multiply(a, x, out=block)
        block += b
        seg = np.flatnonzero(np.concatenate(([True], d[1:] != d[:-1])))
        docs = d[seg]
        minima[:, docs] = np.minimum(minima[:, docs], np.minimum.reduceat(block, seg, axis=1))


def _batches(offsets: np.ndarray, batch_bytes: int) -> Iterator[tuple[int, int]]:
    """Document ranges of about `batch_bytes` text each (a larger document is a batch alone)."""
    n = len(offsets) - 1
    i = 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + batch_bytes, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _batch_shingles(
    texts: pa.Array, ngram: int, lowercase: bool, batch_bytes: int, tokenizer: str
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(first doc, end doc, shingle keys, document of each key) per batch of about `batch_bytes`."""
    _, raw_offsets = utf8_buffer(texts)
    for i, j in _batches(raw_offsets, batch_bytes):
        values, offsets = utf8_buffer(normalize_for_shingles(texts.slice(i, j - i), lowercase))
        starts, ends, words = word_spans(values, offsets, unit_starts(values, offsets, tokenizer))
        word_hash = span_hashes(values, starts, ends)
        del starts, ends, values
        keys, doc_of = shingle_keys(word_hash, words, ngram)
        yield i, j, keys, doc_of


def _as_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        return texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    return texts


def signatures(
    texts: pa.Array | pa.ChunkedArray,
    ngram: int,
    num_perm: int,
    seed: int,
    lowercase: bool = True,
    batch_bytes: int = BATCH_BYTES,
    tokenizer: str = "auto",
) -> np.ndarray:
    """MinHash signatures, (docs, num_perm) uint32, of a column of texts (all EMPTY for a document
    without shingles: see `has_shingles`)."""
    return signatures_and_shingles(texts, ngram, num_perm, seed, lowercase, batch_bytes, tokenizer, False)[0]


def signatures_and_shingles(
    texts: pa.Array | pa.ChunkedArray,
    ngram: int,
    num_perm: int,
    seed: int,
    lowercase: bool = True,
    batch_bytes: int = BATCH_BYTES,
    tokenizer: str = "auto",
    with_sets: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signatures (as `signatures`) and, with `with_sets`, every document's shingle set: the
    distinct 32-bit shingle keys the signature is the minimum over, sorted, concatenated
    (uint32), with int64 offsets (len docs+1) — what text verification takes the Jaccard of."""
    texts = _as_array(texts)
    a, b = minhash_permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    sets: list[np.ndarray] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for i, j, keys, doc_of in _batch_shingles(texts, ngram, lowercase, batch_bytes, tokenizer):
        minima = np.full((num_perm, j - i), np.iinfo(np.uint64).max, dtype=U64)
        update_minima(minima, keys, doc_of, a, b)
        out[i:j] = (minima >> U64(32)).T
        if with_sets:
            distinct = sorted_unique((doc_of.astype(U64) << U64(32)) | keys)
            sets.append((distinct & U64(0xFFFFFFFF)).astype(np.uint32))
            counts[i:j] = np.bincount((distinct >> U64(32)).astype(np.int64), minlength=j - i)
    flat = np.concatenate(sets) if sets else np.zeros(0, np.uint32)
    return out, flat, np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def shingle_sets(
    texts: pa.Array | pa.ChunkedArray, ngram: int, lowercase: bool = True, tokenizer: str = "auto",
    batch_bytes: int = BATCH_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Every document's shingle set (sorted distinct uint32 keys, concatenated) and its offsets."""
    texts = _as_array(texts)
    sets: list[np.ndarray] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for i, j, keys, doc_of in _batch_shingles(texts, ngram, lowercase, batch_bytes, tokenizer):
        distinct = sorted_unique((doc_of.astype(U64) << U64(32)) | keys)
        sets.append((distinct & U64(0xFFFFFFFF)).astype(np.uint32))
        counts[i:j] = np.bincount((distinct >> U64(32)).astype(np.int64), minlength=j - i)
    flat = np.concatenate(sets) if sets else np.zeros(0, np.uint32)
    return flat, np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique(x) by one sort and a mask (np.unique itself is tens of times slower on large
    uint64 arrays with the numpy this project pins)."""
    y = np.sort(x)
    if len(y) < 2:
        return y
    fresh = np.empty(len(y), dtype=bool)
    fresh[0] = True
    np.not_equal(y[1:], y[:-1], out=fresh[1:])
    return y[fresh]


def pair_jaccard(a_keys: np.ndarray, a_sizes: np.ndarray, b_keys: np.ndarray, b_sizes: np.ndarray) -> np.ndarray:
    """Exact Jaccard |A∩B| / |A∪B| of pairs of sets: `a_keys` holds the pairs' A sets one after
    the other (each sorted and distinct, `a_sizes` long), `b_keys` the B sets. Vectorised: the
    keys of both sides, tagged with their pair, are sorted once; a key present on both sides of a
    pair appears twice in a row. Two empty sets have Jaccard 0."""
    n = len(a_sizes)
    tag_a = np.repeat(np.arange(n, dtype=U64), a_sizes) << U64(32)
    tag_b = np.repeat(np.arange(n, dtype=U64), b_sizes) << U64(32)
    both = np.concatenate([tag_a | a_keys.astype(U64), tag_b | b_keys.astype(U64)])
    both.sort()
    twice = both[1:][both[1:] == both[:-1]]
    inter = np.bincount((twice >> U64(32)).astype(np.int64), minlength=n)
    union = np.asarray(a_sizes, dtype=np.int64) + np.asarray(b_sizes, dtype=np.int64) - inter
    return np.divide(inter, union, out=np.zeros(n), where=union > 0)


def has_shingles(sigs: np.ndarray) -> np.ndarray:
    """Per signature row: False for a document without shingles (all values EMPTY). Such rows
    must not enter the LSH buckets (they would all share every band). A real signature is all
    EMPTY with probability 2^-(32 x num_perm)."""
    return (sigs != EMPTY).any(axis=1)


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(docs, bands) uint64: one hash per band of `rows` consecutive signature values."""
    out = np.empty((sigs.shape[0], bands), dtype=U64)
    for band in range(bands):
        h = np.full(sigs.shape[0], (band + 1) * 0x9E3779B97F4A7C15 % (1 << 64), dtype=U64)
        for col in range(band * rows, (band + 1) * rows):
            h ^= sigs[:, col].astype(U64)
            h = fmix64(h)
        out[:, band] = h
    return out


# ---- graph -------------------------------------------------------------------------------------


def connected_components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (sorted unique keys of the edges) and, per node, the smallest node of its component.

    Vectorised union-find: hook the larger root under the smaller one for every edge, then jump
    pointers until every node points at its root; repeat until no edge joins two roots."""
    nodes, inverse = np.unique(np.concatenate([u, v]), return_inverse=True)
    ui, vi = inverse[: len(u)], inverse[len(u) :]
    parent = np.arange(len(nodes))
    while True:
        pu, pv = parent[ui], parent[vi]
        differ = pu != pv
        if not differ.any():
            break
        lo, hi = np.minimum(pu[differ], pv[differ]), np.maximum(pu[differ], pv[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return nodes, nodes[parent]


def survivors(nodes: np.ndarray, roots: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """The kept key of each node's component: the root (lowest key) or the longest, ties by lowest key."""
    if lengths is None:
        return roots
    order = np.lexsort((nodes, -lengths.astype(np.int64), roots))
    sorted_roots = roots[order]
    first = np.concatenate(([True], sorted_roots[1:] != sorted_roots[:-1]))
    group_roots, group_keepers = sorted_roots[first], nodes[order][first]
    return group_keepers[np.searchsorted(group_roots, roots)]


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """{"2": n, ...}: exact sizes up to 16, then sizes rounded down to a power of two (< 1 KB)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    sizes = sizes[sizes > 1]
    if not len(sizes):
        return {}
    big = sizes > 16
    binned = sizes.copy()
    binned[big] = 1 << np.floor(np.log2(sizes[big])).astype(np.int64)
    keys, counts = np.unique(binned, return_counts=True)
    return {str(int(k)): int(c) for k, c in zip(keys, counts, strict=True)}
