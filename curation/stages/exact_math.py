"""The math of exact deduplication: text normalisation and 128-bit hashes, vectorised.

What each `normalize` mode keeps (the field docs of `ExactDedupParams.normalize` say the same):

    none               the UTF-8 bytes as stored.
    whitespace         every run of whitespace (ASCII tab, newline, vertical tab, form feed, carriage
                       return, space, and Unicode separators \\p{Z}) becomes one space; leading and
                       trailing whitespace is removed. Everything else is kept.
    full (default)     Unicode NFKC (so NFC and NFD spellings, full-width letters and ligatures
                       compare equal), lowercase (Unicode simple case mapping), then whitespace as
                       above. Punctuation, symbols, digits and emoji are kept: `x = a + b;` and
                       `x = a - b;` stay different, so code and formulas are safe.
    strip-punctuation  `full`, and every punctuation or symbol character (\\p{P}, \\p{S}: `.,;:!?`,
                       quotes, brackets, `+-*/=<>`, currency, emoji, ...) removed before whitespace
                       is collapsed. For prose only: it merges code and formulas that differ only
                       in operators, and makes emoji-only texts empty.

A document whose normalised text is empty (empty, whitespace-only, or in `strip-punctuation` made
only of punctuation and symbols) has no content to compare: `hashable_mask` is False for it and the
stage must keep it out of every duplicate group (its hash would otherwise be the hash of the empty
string, shared by all such documents).

Speed (issue 9: the `exact-dedup.hash` step reads, normalises and hashes every byte of the corpus):

* Text is processed in batches of about `BATCH_BYTES` taken from the column's own chunks (Parquet
  row groups) as zero-copy slices: the shard's text is never combined into one buffer, nor cast to
  `large_string`, and memory stays bounded whatever the shard size.
* ASCII documents (most of an English corpus; NFKC leaves ASCII unchanged) are lowercased by
  Arrow's `ascii_lower` and their whitespace collapsed on the bytes in numpy. A batch is checked
  for non-ASCII bytes with one `max()`; only a batch that has some gets per-document flags, and in
  such a batch the ASCII path still runs over the whole batch (no copy of the ASCII documents):
  the non-ASCII documents' results from it are discarded.
* Whitespace collapse finds what changes instead of rebuilding every byte: the control bytes
  (`< 0x20`, rare: newlines, tabs) by position, then a mask of the bytes to drop (a space after a
  space, a leading run, the start of a trailing run). Text without any needs no copy at all;
  otherwise the bytes go with one Arrow `filter` (block copies of the kept runs) and the offsets
  move by the dropped bytes before them, counted on the packed mask (`_drop`). ASCII punctuation
  (`strip-punctuation`) goes the same way, before the whitespace.
* Documents with non-ASCII bytes go through Arrow's NFKC and lowercase — except that NFKC is
  skipped for a document all of whose characters are NFKC-inert (assigned, canonical combining
  class 0, unchanged by NFKC alone, never the second character of a canonical composition): such a
  text passes the Unicode quick check (UAX #15), so NFKC returns it unchanged, in this Unicode
  version and, by the normalisation stability policy, in every later one. The characters' status
  is worked out once per distinct character met (`_learn`), not per document.
* Each document is then hashed with xxh3-128 straight from the normalised buffer (one call per
  document: the `xxhash` package has no batch API; ~0.4 us per document).

The normalised bytes, and therefore the hashes, are the same as those of the plain definition
(`tests/unit/test_text_normalisation.py` and `test_exact_dedup.py` check them against Arrow's
regular expressions).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

MODES = ("none", "whitespace", "full", "strip-punctuation")
BATCH_BYTES = 8 << 20  # text normalised at once
# Unicode separators (\p{Z}) beyond the ASCII space, as UTF-8: what RE2's \p{Z} matches.
SEPARATORS = "\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
SEPARATOR_BYTES = tuple(c.encode() for c in SEPARATORS)
PUNCT_OR_SYMBOL_RE = r"[\p{P}\p{S}]"
TRAILING_ROUNDS = 64  # longer trailing whitespace runs are found by a per-document scan
SPACE = np.uint8(0x20)
_EMPTY = pa.array([], pa.large_string())

# A part of a batch, normalised: (documents of the batch it answers for, bytes, offsets of the
# documents the bytes hold, which of those documents the first field names, or None: all of them).
Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


# ---- the public API -----------------------------------------------------------------------------


def exact_hashes(
    texts: pa.Array | pa.ChunkedArray, mode: str, batch_bytes: int = BATCH_BYTES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(high, low) halves of the xxh3-128 hash of each document's normalised text, and
    `hashable` (False where the normalised text is empty: never group those)."""
    _check_mode(mode)
    n = len(texts)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    hashable = np.zeros(n, dtype=bool)
    for start, batch in _batches(texts, batch_bytes):
        for index, values, offsets, sel in _normalized_parts(batch, mode):
            starts, ends = (offsets[:-1], offsets[1:]) if sel is None else (offsets[sel], offsets[sel + 1])
            h, l_ = _hash_spans(values, starts, ends)
            hi[start + index], lo[start + index] = h, l_
            hashable[start + index] = ends > starts
    return hi, lo, hashable


def normalize_for_hash(texts: pa.Array | pa.ChunkedArray, mode: str) -> pa.Array:
    """The normalised texts (see the module docstring for what each mode keeps), in input order."""
    _check_mode(mode)
    pieces, order = [], []
    for start, batch in _batches(texts, 1 << 62):
        for index, values, offsets, sel in _normalized_parts(batch, mode):
            strings = _strings(offsets, values)
            pieces.append(strings if sel is None else strings.take(pa.array(sel)))
            order.append(start + index)
    if not pieces:
        return _EMPTY
    joined = pa.concat_arrays(pieces)
    index = np.concatenate(order)
    if np.array_equal(index, np.arange(len(index))):
        return joined
    inverse = np.empty(len(index), dtype=np.int64)
    inverse[index] = np.arange(len(index))
    return joined.take(pa.array(inverse))


def hashable_mask(normalised: pa.Array) -> np.ndarray:
    """True where a normalised text has content (is not empty)."""
    _, offsets = _buffers(_plain(normalised))
    return offsets[1:] > offsets[:-1]


def text_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of the xxh3-128 hash of each text's UTF-8 bytes."""
    values, offsets = _buffers(_plain(texts))
    return _hash_spans(values, offsets[:-1], offsets[1:])


def _hash_spans(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    view = values.data  # a memoryview: slicing it copies nothing
    digest = xxhash.xxh3_128_digest
    raw = b"".join([digest(view[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
    halves = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    return halves[:, 0].copy(), halves[:, 1].copy()


# ---- columns, batches, buffers ------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}; expected one of {', '.join(MODES)}")


def _plain(texts: pa.Array) -> pa.Array:
    """A string or large_string array without nulls (null = empty text)."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        texts = texts.cast(pa.large_string())
    return pc.fill_null(texts, "") if texts.null_count else texts


def _buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The bytes of a string array (zero-copy, from its first document's first byte) and its
    int64 offsets into them (len n+1, starting at 0)."""
    n = len(texts)
    if n == 0:
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    bufs = texts.buffers()
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(bufs[1], dtype=width, count=texts.offset + n + 1)[texts.offset :]
    first, last = int(offsets[0]), int(offsets[-1])
    values = np.frombuffer(bufs[2], dtype=np.uint8)[first:last] if bufs[2] is not None and last > first \
        else np.zeros(0, np.uint8)
    return values, offsets.astype(np.int64) - first


def _batches(texts: pa.Array | pa.ChunkedArray, batch_bytes: int) -> Iterator[tuple[int, pa.Array]]:
    """(first document, batch): consecutive documents of about `batch_bytes` text each, as zero-copy
    slices of the column's chunks (chunks much smaller than a batch are concatenated; a larger
    document is a batch alone)."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    pending: list[pa.Array] = []
    start, pending_start, pending_bytes = 0, 0, 0

    def flush() -> Iterator[tuple[int, pa.Array]]:
        nonlocal pending, pending_bytes
        if pending:
            yield pending_start, pending[0] if len(pending) == 1 else pa.concat_arrays(pending)
        pending, pending_bytes = [], 0

    for raw in chunks:
        if not len(raw):
            continue
        chunk = _plain(raw)
        _, offsets = _buffers(chunk)
        size = int(offsets[-1])
        if size < batch_bytes // 2:  # small: gathered with its neighbours
            if not pending:
                pending_start = start
            pending.append(chunk)
            pending_bytes += size
            if pending_bytes >= batch_bytes // 2:
                yield from flush()
        else:
            yield from flush()
            n, i = len(chunk), 0
            while i < n:
                j = int(np.searchsorted(offsets, offsets[i] + batch_bytes, side="right")) - 1
                j = min(max(j, i + 1), n)
                yield start + i, chunk.slice(i, j - i)
                i = j
        start += len(chunk)
    yield from flush()


def _strings(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(
        pa.large_string(),
        len(offsets) - 1,
        [None, pa.py_buffer(np.ascontiguousarray(offsets, dtype=np.int64)), pa.py_buffer(values)],
    )


# ---- normalisation ------------------------------------------------------------------------------


def _normalized_parts(batch: pa.Array, mode: str) -> Iterator[Part]:
    """The batch's documents normalised: ASCII documents and the others apart (see `Part`)."""
    values, offsets = _buffers(batch)
    n = len(batch)
    everything = np.arange(n)
    if mode == "none" or n == 0:
        yield everything, values, offsets, None
        return
    if mode == "whitespace":
        yield (everything, *_collapse(values, offsets, separators=True), None)
        return
    strip = mode == "strip-punctuation"
    if not len(values) or int(values.max()) < 0x80:
        yield (everything, *_ascii_normalized(batch, strip), None)
        return
    ascii_docs = np.asarray(pc.string_is_ascii(batch).to_numpy(zero_copy_only=False), dtype=bool)
    index = np.flatnonzero(ascii_docs)
    if len(index):
        lengths = offsets[1:] - offsets[:-1]
        if 2 * int(lengths[index].sum()) >= len(values):  # mostly ASCII: run over the batch, no copy
            yield (index, *_ascii_normalized(batch, strip), index)
        else:
            yield (index, *_ascii_normalized(batch.take(pa.array(index)), strip), None)
    needs = _needs_nfkc(values, offsets)
    for nfkc in (False, True):
        index = np.flatnonzero(~ascii_docs & (needs == nfkc))
        if len(index):
            part = batch if len(index) == n else batch.take(pa.array(index))
            yield (index, *_unicode_normalized(part, nfkc, strip), None)


def _ascii_normalized(texts: pa.Array, strip_punctuation: bool) -> tuple[np.ndarray, np.ndarray]:
    """ASCII texts lowercased (and without ASCII punctuation and symbols, if asked), whitespace
    collapsed. Bytes >= 0x80 pass unchanged (the caller discards such documents' results)."""
    values, offsets = _buffers(pc.ascii_lower(texts))
    if strip_punctuation and len(values):
        # ASCII punctuation and symbols: !-/ :-@ [-` {-~, i.e. the printable bytes 33-126 that are
        # not digits or letters (no uppercase letter is left after ascii_lower).
        shifted = np.subtract(values, np.uint8(33))
        punct = shifted < np.uint8(94)
        np.subtract(shifted, np.uint8(48 - 33), out=shifted)
        punct ^= shifted < np.uint8(10)  # digits
        np.subtract(shifted, np.uint8(97 - 48), out=shifted)
        punct ^= shifted < np.uint8(26)  # lowercase letters
        values, offsets = _drop(values, offsets, punct)
    return _collapse(values, offsets, separators=False)


def _unicode_normalized(texts: pa.Array, nfkc: bool, strip_punctuation: bool) -> tuple[np.ndarray, np.ndarray]:
    """NFKC (unless it cannot change the texts: see `_needs_nfkc`), lowercase, punctuation and
    symbols removed (if asked), whitespace collapsed."""
    if nfkc:
        texts = pc.utf8_normalize(texts, "NFKC")
    texts = pc.utf8_lower(texts)
    if strip_punctuation:
        texts = pc.replace_substring_regex(texts, PUNCT_OR_SYMBOL_RE + "+", "")
    values, offsets = _buffers(texts)
    return _collapse(values, offsets, separators=True)


def _drop(values: np.ndarray, offsets: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`values` without the bytes where `drop` is True, and the documents' new offsets (the input
    arrays themselves if nothing is dropped). One Arrow `filter`, which copies runs of kept bytes
    as blocks; the bytes dropped before each offset are counted on the packed mask (a popcount per
    64 bytes), never listed one by one."""
    bits = np.packbits(drop, bitorder="little")
    words = np.zeros((len(bits) + 7) // 8 + 1, dtype="<u8")  # one spare word: an offset may be at the end
    words.view(np.uint8)[: len(bits)] = bits
    counts = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(_popcount(words), out=counts[1:])
    at = offsets >> 6
    below = words[at] & ((np.uint64(1) << (offsets & 63).astype(np.uint64)) - np.uint64(1))
    before = counts[at] + _popcount(below)
    if not before[-1]:
        return values, offsets
    np.invert(bits, out=bits)  # keep = not dropped (bits past the end are ignored)
    kept = pc.filter(pa.Array.from_buffers(pa.uint8(), len(values), [None, pa.py_buffer(values)]),
                     pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)]))
    out = np.frombuffer(kept.buffers()[1], dtype=np.uint8)[kept.offset : kept.offset + len(kept)] \
        if len(kept) else np.zeros(0, np.uint8)
    return out, offsets - before


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has a ufunc for it)."""
    counts: np.ndarray
    if hasattr(np, "bitwise_count"):
        counts = np.bitwise_count(words).astype(np.int64)
    else:  # pragma: no cover - numpy 1.x
        counts = _BYTE_BITS[words.view(np.uint8)].reshape(-1, 8).sum(axis=1)
    return counts


def collapse_whitespace(texts: pa.Array) -> pa.Array:
    """Runs of whitespace (ASCII \\t \\n \\v \\f \\r and space, Unicode \\p{Z}) become one space;
    leading and trailing whitespace is removed. Equal to RE2's `[\\s\\x0b\\p{Z}]+` -> " ", then
    trimming spaces."""
    values, offsets = _buffers(_plain(texts))
    values, offsets = _collapse(values, offsets, separators=True)
    return _strings(offsets, values)


def _collapse(values: np.ndarray, offsets: np.ndarray, separators: bool) -> tuple[np.ndarray, np.ndarray]:
    """`collapse_whitespace` on bytes and offsets (`separators`: look for the multi-byte Unicode
    separators too). Returns the input arrays themselves when nothing changes."""
    if not len(values):
        return values, np.zeros_like(offsets)
    if separators and int(values.max()) >= 0x80:  # multi-byte separators: first byte a space, rest dropped
        cand = np.flatnonzero((values == 0xC2) | ((values - np.uint8(0xE1)) < np.uint8(3)))
        found = [_find(values, cand, seq) for seq in SEPARATOR_BYTES]
        leads = np.concatenate(found)
        if len(leads):
            values = values.copy()
            values[leads] = SPACE
            rest = np.concatenate([f + k for f, seq in zip(found, SEPARATOR_BYTES, strict=True) for k in range(1, len(seq))])
            drop = np.zeros(len(values), dtype=bool)
            drop[rest] = True
            values, offsets = _drop(values, offsets, drop)
    control = np.flatnonzero(values < SPACE)  # \t \n \v \f \r become spaces; other controls stay
    control = control[(values[control] - np.uint8(9)) < np.uint8(5)]
    if len(control):
        values = values.copy()  # never write into a buffer this function did not allocate
        values[control] = SPACE
    ws = values == SPACE
    drop = np.empty(len(values), dtype=bool)  # a space after a space goes (across documents too: see below)
    drop[0] = False
    np.logical_and(ws[1:], ws[:-1], out=drop[1:])
    starts, ends = offsets[:-1], offsets[1:]
    filled = starts < ends
    first = starts[filled]
    drop[first[ws[first]]] = True  # a leading run goes: its first byte here, the rest as above
    trailing = np.flatnonzero(filled & ws[np.maximum(ends - 1, 0)])
    drop[_run_starts_before(ws, starts[trailing], ends[trailing])] = True  # so does a trailing run
    # A document's first byte is dropped only if it is a space itself (then it leads), so the
    # pairs that straddle two documents change nothing.
    return _drop(values, offsets, drop)


def _find(values: np.ndarray, candidates: np.ndarray, seq: bytes) -> np.ndarray:
    pos: np.ndarray = candidates[values[candidates] == seq[0]]
    pos = pos[pos + len(seq) <= len(values)]
    for k in range(1, len(seq)):
        pos = pos[values[pos + k] == seq[k]]
    return pos


def _run_starts_before(ws: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For documents [start, end) ending in whitespace: where their trailing whitespace run starts."""
    pos: np.ndarray = ends - 1
    active = np.arange(len(pos))
    for _ in range(TRAILING_ROUNDS):
        back = pos[active] - 1
        more = (back >= starts[active]) & ws[np.maximum(back, 0)]
        pos[active[more]] -= 1
        active = active[more]
        if not len(active):
            return pos
    for i in active.tolist():  # very long trailing runs: scan those documents
        text = ws[starts[i] : ends[i]]
        last = np.flatnonzero(~text)
        pos[i] = starts[i] + (int(last[-1]) + 1 if len(last) else 0)
    return pos


# ---- NFKC: which documents can change -----------------------------------------------------------

_INERT = np.zeros(0x110000, dtype=np.int8)  # per code point: 0 not known yet, 1 NFKC-inert, -1 not


def _needs_nfkc(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per document (bytes and offsets as `_buffers` gives them): False where NFKC certainly leaves
    the text unchanged (every character is ASCII or inert, see `_learn`), True where it may not."""
    n = len(offsets) - 1
    lead = np.flatnonzero(values >= 0xC0)  # first bytes of multi-byte characters (valid UTF-8)
    if not len(lead):
        return np.zeros(n, dtype=bool)
    b0 = values[lead].astype(np.int64)
    size = 2 + (b0 >= 0xE0) + (b0 >= 0xF0)
    if int((lead + size).max()) > len(values):  # not valid UTF-8: let Arrow decide
        return np.ones(n, dtype=bool)
    c1 = values[lead + 1].astype(np.int64) & 0x3F
    c2 = values[np.minimum(lead + 2, len(values) - 1)].astype(np.int64) & 0x3F
    c3 = values[np.minimum(lead + 3, len(values) - 1)].astype(np.int64) & 0x3F
    code = np.where(size == 2, ((b0 & 0x1F) << 6) | c1,
                    np.where(size == 3, ((b0 & 0x0F) << 12) | (c1 << 6) | c2,
                             ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3))
    code = np.minimum(code, 0x10FFFF)
    status = _INERT[code]
    if (status == 0).any():
        _learn(np.unique(code[status == 0]))
        status = _INERT[code]
    needs = np.zeros(n, dtype=bool)
    needs[np.searchsorted(offsets, lead[status < 0], side="right") - 1] = True
    return needs


@functools.cache
def _second_characters() -> frozenset[int]:
    """Characters that compose canonically with the character before them (NFC_Quick_Check Maybe)."""
    found = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
    for cp in range(0x30000):  # every canonical decomposition is in planes 0-2
        parts = unicodedata.decomposition(chr(cp)).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            found.add(int(parts[1], 16))
    return frozenset(found)


def _learn(codes: np.ndarray) -> None:
    """Record whether each code point is NFKC-inert: assigned (in this Python's Unicode version),
    canonical combining class 0, unchanged by NFKC on its own, and not the second character of a
    canonical composition (Hangul vowels and trailing consonants, the vowel signs and length marks
    that compose with a letter before them). A text made only of inert characters passes the NFKC
    quick check of UAX #15 (every character NFKC_Quick_Check Yes, combining class 0), so NFKC
    returns it unchanged; by Unicode's normalisation stability policy a later Unicode version
    (Arrow's utf8proc may have one) does too."""
    second = _second_characters()
    for cp in codes.tolist():
        ch = chr(cp)
        inert = (
            unicodedata.category(ch) not in ("Cn", "Cs", "Co")
            and unicodedata.combining(ch) == 0
            and cp not in second
            and unicodedata.normalize("NFKC", ch) == ch
        )
        _INERT[cp] = 1 if inert else -1
