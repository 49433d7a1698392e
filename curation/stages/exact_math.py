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

Speed: ASCII documents (most of an English corpus) are lowercased and their whitespace collapsed
with byte operations in numpy (NFKC leaves ASCII unchanged); only documents with non-ASCII bytes go
through Arrow's NFKC and lowercase. Text is processed in batches of about `BATCH_BYTES`, so memory
stays bounded whatever the shard size. Each document is then hashed with xxh3-128 straight from
the batch's buffer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation.stages.minhash_math import utf8_buffer

MODES = ("none", "whitespace", "full", "strip-punctuation")
BATCH_BYTES = 8 << 20  # text normalised at once
# Unicode separators (\p{Z}) beyond the ASCII space, as UTF-8: what RE2's \p{Z} matches.
SEPARATORS = "\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
SEPARATOR_BYTES = tuple(c.encode() for c in SEPARATORS)
PUNCT_OR_SYMBOL_RE = r"[\p{P}\p{S}]"
TRAILING_ROUNDS = 64  # longer trailing whitespace runs are found by a per-document scan
_EMPTY = pa.array([], pa.large_string())


# ---- the public API -----------------------------------------------------------------------------


def exact_hashes(
    texts: pa.Array | pa.ChunkedArray, mode: str, batch_bytes: int = BATCH_BYTES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(high, low) halves of the xxh3-128 hash of each document's normalised text, and
    `hashable` (False where the normalised text is empty: never group those)."""
    texts = _column(texts)
    n = len(texts)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    hashable = np.zeros(n, dtype=bool)
    for start, stop in _batches(texts, batch_bytes):
        for index, normal in _normalized_parts(texts.slice(start, stop - start), mode):
            h, l_ = text_hashes(normal)
            hi[start + index], lo[start + index] = h, l_
            hashable[start + index] = hashable_mask(normal)
    return hi, lo, hashable


def normalize_for_hash(texts: pa.Array | pa.ChunkedArray, mode: str) -> pa.Array:
    """The normalised texts (see the module docstring for what each mode keeps), in input order."""
    texts = _column(texts)
    parts = list(_normalized_parts(texts, mode))
    if len(parts) == 1:
        return parts[0][1]
    index = np.concatenate([i for i, _ in parts])
    joined = pa.concat_arrays([p for _, p in parts])
    inverse = np.empty(len(index), dtype=np.int64)
    inverse[index] = np.arange(len(index))
    return joined.take(pa.array(inverse))


def hashable_mask(normalised: pa.Array) -> np.ndarray:
    """True where a normalised text has content (is not empty)."""
    _, offsets = utf8_buffer(normalised)
    return offsets[1:] > offsets[:-1]


def text_hashes(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of the xxh3-128 hash of each text's UTF-8 bytes."""
    values, offsets = utf8_buffer(texts)
    view = memoryview(values)
    bounds = offsets.tolist()
    digest = xxhash.xxh3_128_digest
    raw = b"".join([digest(view[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    halves = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)
    return halves[:, 0].copy(), halves[:, 1].copy()


# ---- normalisation ------------------------------------------------------------------------------


def _column(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else _EMPTY
    if texts.null_count:
        texts = pc.fill_null(texts, "")
    return texts.cast(pa.large_string()) if not pa.types.is_large_string(texts.type) else texts


def _batches(texts: pa.Array, batch_bytes: int) -> Iterator[tuple[int, int]]:
    """Document ranges of about `batch_bytes` text each (a larger document is a batch alone)."""
    _, offsets = utf8_buffer(texts)
    n, i = len(texts), 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + batch_bytes, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


def _normalized_parts(texts: pa.Array, mode: str) -> Iterator[tuple[np.ndarray, pa.Array]]:
    """(document indices, their normalised texts): ASCII documents and the others apart."""
    if mode not in MODES:
        raise ValueError(f"unknown normalisation {mode!r}; expected one of {', '.join(MODES)}")
    n = len(texts)
    if mode == "none" or n == 0:
        yield np.arange(n), texts
        return
    if mode == "whitespace":
        yield np.arange(n), collapse_whitespace(texts)
        return
    ascii_docs = np.asarray(pc.string_is_ascii(texts).to_numpy(zero_copy_only=False), dtype=bool)
    for is_ascii in (True, False):
        index = np.flatnonzero(ascii_docs == is_ascii)
        if not len(index):
            continue
        part = texts if len(index) == n else texts.take(pa.array(index))
        if is_ascii:
            part = _ascii_lower(part, strip_punctuation=mode == "strip-punctuation")
        else:
            part = pc.utf8_lower(pc.utf8_normalize(part, "NFKC"))
            if mode == "strip-punctuation":
                part = pc.replace_substring_regex(part, PUNCT_OR_SYMBOL_RE + "+", "")
        yield index, collapse_whitespace(part)


def _strings(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(
        pa.large_string(),
        len(offsets) - 1,
        [None, pa.py_buffer(np.ascontiguousarray(offsets, dtype=np.int64)), pa.py_buffer(values)],
    )


def _rebased(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    values, offsets = utf8_buffer(texts)
    base = int(offsets[0]) if len(offsets) else 0
    return values[base : int(offsets[-1])], offsets - base


def _ascii_lower(texts: pa.Array, strip_punctuation: bool) -> pa.Array:
    """ASCII texts lowercased (and without ASCII punctuation and symbols, if asked)."""
    lowered = pc.ascii_lower(texts)
    if not strip_punctuation:
        return lowered
    values, offsets = _rebased(lowered)
    punct = (values - np.uint8(33)) < np.uint8(15)
    punct |= (values - np.uint8(58)) < np.uint8(7)
    punct |= (values - np.uint8(91)) < np.uint8(6)
    punct |= (values - np.uint8(123)) < np.uint8(4)
    return _strings(*_drop(values, offsets, punct)[::-1])


def _drop(values: np.ndarray, offsets: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`values` without the bytes where `drop` is True, and the documents' new offsets."""
    gone = np.flatnonzero(drop)
    if not len(gone):
        return values, offsets
    return np.delete(values, gone), offsets - np.searchsorted(gone, offsets)


def collapse_whitespace(texts: pa.Array) -> pa.Array:
    """Runs of whitespace (ASCII \\t \\n \\v \\f \\r and space, Unicode \\p{Z}) become one space;
    leading and trailing whitespace is removed. Equal to RE2's `[\\s\\x0b\\p{Z}]+` -> " ", then
    trimming spaces."""
    values, offsets = _rebased(texts)
    if not len(values):
        return _strings(np.zeros(len(offsets), np.int64), values)
    if (values >= 0x80).any():  # multi-byte separators: first byte a space, rest dropped
        cand = np.flatnonzero((values == 0xC2) | ((values - np.uint8(0xE1)) < np.uint8(3)))
        found = [_find(values, cand, seq) for seq in SEPARATOR_BYTES]
        leads = np.concatenate(found)
        if len(leads):
            values = values.copy()
            values[leads] = 0x20
            rest = np.concatenate([f + k for f, seq in zip(found, SEPARATOR_BYTES, strict=True) for k in range(1, len(seq))])
            drop = np.zeros(len(values), dtype=bool)
            drop[rest] = True
            values, offsets = _drop(values, offsets, drop)
    ws = values == 0x20
    ws |= (values - np.uint8(9)) < np.uint8(5)
    starts, ends = offsets[:-1], offsets[1:]
    keep = np.empty(len(values), dtype=bool)  # a byte goes if it and the one before are whitespace
    keep[0] = True
    np.logical_and(ws[1:], ws[:-1], out=keep[1:])
    np.logical_not(keep, out=keep)
    filled = starts < ends
    keep[starts[filled]] = ~ws[starts[filled]]  # a leading run goes
    trailing = np.flatnonzero(filled & ws[np.maximum(ends - 1, 0)])
    keep[_run_starts_before(ws, starts[trailing], ends[trailing])] = False  # so does a trailing run
    out = np.where(ws, np.uint8(0x20), values)[keep]
    gone = np.flatnonzero(~keep)
    return _strings(offsets - np.searchsorted(gone, offsets), out)


def _find(values: np.ndarray, candidates: np.ndarray, seq: bytes) -> np.ndarray:
    pos = candidates[values[candidates] == seq[0]]
    pos = pos[pos + len(seq) <= len(values)]
    for k in range(1, len(seq)):
        pos = pos[values[pos + k] == seq[k]]
    return pos


def _run_starts_before(ws: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For documents [start, end) ending in whitespace: where their trailing whitespace run starts."""
    pos = ends - 1
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
