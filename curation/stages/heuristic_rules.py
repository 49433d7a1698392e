"""Pure, vectorised rule functions of the heuristic filter (Gopher, C4, FineWeb).

A shard's texts are split once into words, lines and paragraphs by Arrow (`TextBatch`, every split
computed lazily and shared by all rule families). The measures are numpy work on the UTF-8 bytes of
those units, never a regular expression per word:

- words are the maximal runs of bytes other than ASCII whitespace and the few non-ASCII
  whitespace characters (and U+001C..U+001F): exactly `str.split()`'s words, found with numpy on
  the bytes and compacted by one Arrow filter (no Arrow split, no list array);
- character classes come from byte comparisons for ASCII and from a code-point table for the rest,
  filled lazily from RE2's own `\\p{P}`, `\\p{S}` and `\\pL`, so the rules mean exactly what the
  regular expressions they replace meant; "the word holds a letter" is decided by its first byte
  or, for the few words where that is not enough, a `logical_or.reduceat` over its bytes;
- line prefixes and suffixes are compared as bytes; stop words are matched as 8-byte integers;
  `#`, ellipses, newlines and C4's sentence ends are counted on the bytes of the whole batch;
- words get ids per document (`exact_ids`): a word of up to 7 bytes is its own 64-bit key, a
  longer one a hash that is checked byte by byte against the word it is grouped with, so two
  different words never share an id (no Arrow dictionary encoding);
- repeated lines, paragraphs and word n-grams are grouped exactly by sorting keys packed into one
  uint64 (ids, never hashes), and only among candidates that can still repeat.

Nothing here loops over documents in Python.

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
from curation.stages.minhash_math import fmix64, utf8_buffer

Check = tuple[str, np.ndarray]  # (rule name, True where the document fails the rule)

# Line starts and ends the rules look for (sets of characters or strings, compared as bytes).
BULLETS = "•-*‣◦⁃●▪–"
ELLIPSES = ("...", "…")
# Terminal punctuation of FineWeb's line rule: Latin, CJK, Devanagari, Arabic, Armenian, Ethiopic marks.
FINEWEB_LINE_ENDS = ".'\"!?։؟۔।॥።፧。！．？｡"
C4_LINE_ENDS = '.!?"”'
SENTENCE_END = r"[.!?]+[\"'”’)\]]*(?:\s|$)"
C4_POLICY = r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies"
TRIM_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—¿¡"
# Whitespace of `str.split()` (and of Arrow's utf8 kernels) beyond ASCII \t \n \v \f \r and space.
EXTRA_WHITESPACE = "\x1c\x1d\x1e\x1f\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + (
    "\u2028\u2029\u202f\u205f\u3000"
)
PACKED_MAX = 7  # list words up to this many ASCII bytes are compared as one uint64 (8th byte: length)
CLOSER_ROUNDS = 16  # longer runs of closing quotes and brackets after a sentence end: Arrow counts
ID_CHUNK = 1 << 16  # strings given ids together (whole documents): the work stays in cache
TRIM_ROUNDS = 16  # words with longer punctuation runs at an end are trimmed by Arrow instead

# ---- bytes and character classes -------------------------------------------------------------

PUNCT_OR_SYMBOL, LETTER, KNOWN = 1, 2, 128
_CLASSES = np.zeros(0x110000, dtype=np.uint8)  # filled on first sight of each code point
_LENGTH_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(PACKED_MAX + 1)], dtype=np.uint64)


def char_classes(codepoints: np.ndarray) -> np.ndarray:
    """Class bits of each code point: `\\p{P}|\\p{S}` and `\\pL`, from RE2 (the engine of the
    regular expressions the rules were written with)."""
    cps = np.clip(codepoints, 0, 0x10FFFF)
    unknown = np.unique(cps[(_CLASSES[cps] & KNOWN) == 0])
    valid = unknown[(unknown < 0xD800) | (unknown > 0xDFFF)]
    if len(valid):
        chars = pa.array([chr(c) for c in valid.tolist()], pa.string())
        bits = np.full(len(valid), KNOWN, dtype=np.uint8)
        bits |= _np(pc.match_substring_regex(chars, r"[\p{P}\p{S}]"), bool) * np.uint8(PUNCT_OR_SYMBOL)
        bits |= _np(pc.match_substring_regex(chars, r"\pL"), bool) * np.uint8(LETTER)
        _CLASSES[valid] = bits
    _CLASSES[unknown] |= KNOWN  # surrogates (never in valid UTF-8): no class
    return _CLASSES[cps]


def decode_at(values: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """Code points of the UTF-8 sequences starting at byte positions `leads` (lead bytes >= 0xC0)."""
    b0 = values[leads].astype(np.int64)
    b1, b2, b3 = (values.take(leads + k, mode="clip").astype(np.int64) & 0x3F for k in (1, 2, 3))
    two = ((b0 & 0x1F) << 6) | b1
    three = ((b0 & 0x0F) << 12) | (b1 << 6) | b2
    four = ((b0 & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3
    return np.where(b0 >= 0xF0, four, np.where(b0 >= 0xE0, three, two))


def find_sequences(values: np.ndarray, sequences: Iterable[bytes], candidates: np.ndarray) -> np.ndarray:
    """Sorted start positions of every occurrence of any of `sequences` (UTF-8 encodings of
    characters, so occurrences never overlap) among the sorted byte positions `candidates`."""
    found = []
    for seq in sequences:
        pos = candidates[values[candidates] == seq[0]]
        pos = pos[pos + len(seq) <= len(values)]
        for k in range(1, len(seq)):
            pos = pos[values[pos + k] == seq[k]]
        found.append(pos)
    return np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _ascii_space(v: np.ndarray) -> np.ndarray:
    """ASCII whitespace bytes (tab, newline, vertical tab, form feed, carriage return, space)."""
    out = (v - np.uint8(9)) < np.uint8(5)
    out |= v == 0x20
    return out


def _letters(v: np.ndarray) -> np.ndarray:
    """ASCII letters among bytes."""
    return ((v | np.uint8(0x20)) - np.uint8(97)) < np.uint8(26)


def _ascii_punct(v: np.ndarray) -> np.ndarray:
    """Bytes of string.punctuation: the ASCII part of \\p{P} and \\p{S} (and of TRIM_PUNCT)."""
    out = (v - np.uint8(33)) < np.uint8(15)  # ! .. /
    out |= (v - np.uint8(58)) < np.uint8(7)  # : .. @
    out |= (v - np.uint8(91)) < np.uint8(6)  # [ .. `
    out |= (v - np.uint8(123)) < np.uint8(4)  # { .. ~
    return out


def _char_flags(values: np.ndarray, positions: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the characters starting at byte `positions` of `values` (`at` = their first bytes):
    not in `\\p{P}|\\p{S}`, and in `\\pL`. Continuation bytes answer False to both."""
    letter = _letters(at)
    other = ~_ascii_punct(at) & (at < 0x80)
    leads = np.flatnonzero(at >= 0xC0)
    if len(leads):
        classes = char_classes(decode_at(values, positions[leads]))
        letter[leads] = (classes & LETTER) > 0
        other[leads] = (classes & PUNCT_OR_SYMBOL) == 0
    return other, letter


def _compress(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`values[keep]` for uint8 `values`, by Arrow's filter on a bit-packed mask (faster than
    numpy's boolean indexing on bytes)."""
    if not len(values):
        return values
    bits = pa.py_buffer(np.packbits(keep, bitorder="little"))
    kept = pc.filter(pa.array(values), pa.Array.from_buffers(pa.bool_(), len(keep), [None, bits]))
    return np.frombuffer(kept.buffers()[1], dtype=np.uint8, count=len(kept), offset=kept.offset)


def gather_spans(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bytes of the spans [start, end), one after another, and their offsets."""
    lengths = ends - starts
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths)
    index += np.arange(offsets[-1], dtype=np.int64)
    return values[index], offsets


def _np(arr: pa.Array | pa.ChunkedArray, dtype: type) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dtype)


def _any_in_spans(flags: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per non-empty span [start, end) of `flags` (spans sorted, not overlapping): any True."""
    if not len(starts):
        return np.zeros(0, dtype=bool)
    padded = np.append(flags, False)
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    return np.logical_or.reduceat(padded, bounds)[0::2]


# ---- exact ids of byte strings ----------------------------------------------------------------

_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_LONG = np.uint64(1 << 63)  # set in the key of every unit of 8 or more bytes


def _u64_reader(values: np.ndarray) -> np.ndarray:
    """x[i] = the 8 bytes of `values` from position i on, little-endian (zeros past the end)."""
    padded = np.zeros(len(values) + 8, dtype=np.uint8)
    padded[: len(values)] = values
    return np.ndarray((len(values) + 1,), dtype="<u8", buffer=padded, strides=(1,))


def unit_keys(as_u64: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """A uint64 key per byte string [offsets[i], offsets[i + 1]) (read through `_u64_reader`).

    A string of up to 7 bytes is its key, exactly: its bytes in the low 7 bytes and its length in
    the top one (0..7), so equal keys are equal strings. A longer one's key is a hash of its
    length and bytes (its first and last 8 bytes, which overlap or meet up to 16 bytes; all of
    them beyond) with the top bit set, so it never equals a short string's key; equal keys of long
    strings are only candidates (see `exact_ids`)."""
    starts, ends = offsets[:-1], offsets[1:]
    lengths = ends - starts
    keys = as_u64[starts]
    clipped = np.minimum(lengths, 7).astype(np.uint64)
    keys &= (np.uint64(1) << (clipped << np.uint64(3))) - np.uint64(1)  # the string's bytes
    keys |= clipped << np.uint64(56)
    long = np.flatnonzero(lengths >= 8)
    if len(long):
        h = lengths[long].astype(np.uint64) * _HASH_MUL
        h ^= as_u64[starts[long]]
        h = fmix64(h)
        h ^= as_u64[ends[long] - 8]
        h = fmix64(h)
        longer = np.flatnonzero(lengths[long] > 16)
        if len(longer):  # the bytes between the first and last 8, 8 at a time
            at, stop = starts[long[longer]] + 8, ends[long[longer]] - 8
            hl = h[longer]
            active = np.arange(len(longer))
            while len(active):
                rest = stop[active] - at[active]
                chunk = as_u64[at[active]]
                partial = rest < 8
                chunk[partial] &= _LENGTH_MASKS[rest[partial]]
                hl[active] = fmix64((hl[active] ^ chunk) * _HASH_MUL)
                at[active] += 8
                active = active[at[active] < stop[active]]
            h[longer] = hl
        keys[long] = h | _LONG
    return keys


def _same_strings(as_u64: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether string a[i] equals string b[i] for every i (all of 8 bytes or more), comparing
    8 bytes at a time: the first 8, the last 8, then the ones between."""
    lengths = offsets[1:][a] - offsets[:-1][a]
    if not np.array_equal(lengths, offsets[1:][b] - offsets[:-1][b]):
        return False
    at_a, at_b = offsets[:-1][a], offsets[:-1][b]
    if not np.array_equal(as_u64[at_a], as_u64[at_b]):
        return False
    if not np.array_equal(as_u64[at_a + lengths - 8], as_u64[at_b + lengths - 8]):
        return False
    more = lengths > 16
    at_a, at_b, left = at_a[more] + 8, at_b[more] + 8, lengths[more] - 16
    while len(left):
        diff = as_u64[at_a] ^ as_u64[at_b]
        partial = left < 8
        diff[partial] &= _LENGTH_MASKS[left[partial]]
        if diff.any():
            return False
        more = left > 8
        at_a, at_b, left = at_a[more] + 8, at_b[more] + 8, left[more] - 8
    return True


def exact_ids(
    values: np.ndarray, offsets: np.ndarray, doc_bounds: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """An int64 id per byte string [offsets[i], offsets[i + 1]) of `values`: equal strings of one
    document get equal ids, all other pairs different ones; ids are below twice the number of
    strings. And True for each string whose id occurs more than once. The strings of document d
    are [doc_bounds[d], doc_bounds[d + 1]) (None: one document). None in the (astronomically
    rare) case that two different long strings share their 64-bit hash.

    The keys of `unit_keys`, times an odd constant (a bijection whose top bits depend on every key
    bit), have their top bits packed between the document and the string's index inside it into
    one uint64 sorted with numpy's SIMD sort: equal keys of a document land together, in index
    order, without an argsort, and every later gather stays inside one document's strings.
    Strings whose truncated keys collide while their full keys differ get ids of their own from
    the full keys; then every long string is compared byte by byte with the one before it of the
    same id, so an id never joins two different strings."""
    m = len(offsets) - 1
    ids = np.empty(m, dtype=np.int64)
    recurring = np.zeros(m, dtype=bool)
    if m == 0:
        return ids, recurring
    if doc_bounds is None:
        doc_bounds = np.array([0, m], dtype=np.int64)
    as_u64 = _u64_reader(values)
    # Whole documents of about ID_CHUNK strings at a time: the arrays of a chunk stay in cache.
    cuts = np.unique(doc_bounds[np.searchsorted(doc_bounds, np.arange(0, m, ID_CHUNK))])
    cuts = cuts[cuts < m]
    for lo, hi in zip(cuts.tolist(), [*cuts[1:].tolist(), m], strict=True):
        inside = doc_bounds[(doc_bounds >= lo) & (doc_bounds <= hi)]
        found = _exact_ids_chunk(as_u64, offsets[lo : hi + 1], inside - lo)
        if found is None:
            return None
        ids[lo:hi] = found[0] + 2 * lo
        recurring[lo:hi] = found[1]
    return ids, recurring


def _exact_ids_chunk(
    as_u64: np.ndarray, offsets: np.ndarray, doc_bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """`exact_ids` of some whole documents (doc_bounds from 0 to their strings)."""
    m = len(offsets) - 1
    keys = unit_keys(as_u64, offsets)
    runs = np.diff(doc_bounds)
    doc_bits, local_bits = _bit_width(len(runs) - 1), _bit_width(int(runs.max()) - 1)
    parent = None
    if len(runs) == 1:
        doc_bits = 0
    elif doc_bits + local_bits > 40:  # too little room for the key: the global index instead
        parent = np.repeat(np.arange(len(runs)), runs)  # and a group ends where its document does
        doc_bits, local_bits = 0, _bit_width(m - 1)
    key_bits = 64 - doc_bits - local_bits
    # packed = doc | top key bits | index inside the document
    packed = keys * _HASH_MUL
    packed >>= np.uint64(64 - key_bits)
    packed <<= np.uint64(local_bits)
    packed += np.arange(m, dtype=np.uint64)
    if doc_bits:
        shift = np.uint64(key_bits + local_bits)
        packed += np.repeat((np.arange(len(runs), dtype=np.uint64) << shift) - doc_bounds[:-1].astype(np.uint64), runs)
    packed.sort()
    local = (packed & np.uint64((1 << local_bits) - 1)).view(np.int64)
    packed >>= np.uint64(local_bits)
    new_group = np.empty(m, dtype=bool)
    new_group[0] = True
    np.not_equal(packed[1:], packed[:-1], out=new_group[1:])
    if doc_bits:
        order = doc_bounds[(packed >> np.uint64(key_bits)).view(np.int64)] + local
    else:
        order = local
        if parent is not None:
            sorted_parent = parent[order]
            new_group[1:] |= sorted_parent[1:] != sorted_parent[:-1]
    del packed
    group = np.cumsum(new_group) - 1
    ids = np.empty(m, dtype=np.int64)
    ids[order] = group
    sorted_keys = keys[order]
    same_id = ~new_group[1:]
    clash = same_id & (sorted_keys[1:] != sorted_keys[:-1])
    if clash.any():  # truncated keys collide: those groups take ids from their full keys
        at = np.flatnonzero(np.isin(group, group[1:][clash]))  # whole groups, in sorted order
        sub_keys, sub_groups = keys[order[at]], group[at]
        by_key = np.lexsort((sub_keys, sub_groups))  # a group is one document's
        sub_keys, sub_groups = sub_keys[by_key], sub_groups[by_key]
        fresh = np.ones(len(at), dtype=bool)
        fresh[1:] = (sub_keys[1:] != sub_keys[:-1]) | (sub_groups[1:] != sub_groups[:-1])
        order[at] = order[at][by_key]  # equal ids together
        ids[order[at]] = int(group[-1]) + np.cumsum(fresh)
        sorted_keys, sorted_ids = keys[order], ids[order]
        same_id = sorted_ids[1:] == sorted_ids[:-1]
    # Equal ids are contiguous in `order`: each long string against the one before it.
    pair = np.flatnonzero(same_id & (sorted_keys[1:] >= _LONG))
    if not _same_strings(as_u64, offsets, order[pair + 1], order[pair]):
        return None
    repeats = np.zeros(m, dtype=bool)
    pair = np.flatnonzero(same_id)
    repeats[order[pair]] = True
    repeats[order[pair + 1]] = True
    return ids, repeats


# ---- units ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Units:
    """Flat non-empty units (words, lines or paragraphs) of a batch, each with its document."""

    values: pa.Array  # large_string, the units one after another in one data buffer
    parent: np.ndarray  # int64, non-decreasing
    n_docs: int

    @cached_property
    def doc_bounds(self) -> np.ndarray:
        """Units of document d are [doc_bounds[d], doc_bounds[d + 1])."""
        return np.searchsorted(self.parent, np.arange(self.n_docs + 1))

    def per_doc(self, values: np.ndarray | None = None) -> np.ndarray:
        """Sum of `values` (one per unit; booleans count) per document, or units per document."""
        bounds = self.doc_bounds
        if values is None:
            return np.diff(bounds).astype(np.float64)
        if not len(values):
            return np.zeros(self.n_docs)
        if values.dtype == bool:
            values = values.view(np.uint8)
        sums = np.zeros(self.n_docs)
        filled = bounds[:-1] < bounds[1:]  # a reduceat segment runs to the next filled document
        sums[filled] = np.add.reduceat(values, bounds[:-1][filled], dtype=np.float64)
        return sums

    @cached_property
    def buffer(self) -> tuple[np.ndarray, np.ndarray]:
        """UTF-8 bytes (from the first unit's start) and offsets (len units + 1) into them."""
        values, offsets = utf8_buffer(self.values)
        base = int(offsets[0]) if len(offsets) else 0
        return values[base : int(offsets[-1])], offsets - base

    @cached_property
    def _non_ascii(self) -> tuple[np.ndarray, np.ndarray]:
        """Per unit: holds a non-ASCII byte; its characters (code points)."""
        values, offsets = self.buffer
        byte_lengths = np.diff(offsets)
        high = np.flatnonzero(values >= 0x80)
        if not len(high):
            return np.zeros(len(byte_lengths), dtype=bool), byte_lengths
        if len(high) * 8 > len(values):  # mostly non-ASCII text: let Arrow count
            flags = _any_in_spans(values >= 0x80, offsets[:-1], offsets[1:])
            return flags, _np(pc.utf8_length(self.values), np.int64)
        word = np.searchsorted(offsets[1:], high, side="right")
        flags = np.zeros(len(byte_lengths), dtype=bool)
        flags[word] = True
        lengths = byte_lengths.copy()
        continued = word[values[high] < 0xC0]  # sorted: count runs instead of np.unique
        if len(continued):
            head = np.flatnonzero(np.concatenate([[True], continued[1:] != continued[:-1]]))
            lengths[continued[head]] -= np.diff(np.append(head, len(continued)))
        return flags, lengths

    @property
    def non_ascii(self) -> np.ndarray:
        return self._non_ascii[0]

    @property
    def lengths(self) -> np.ndarray:
        """Characters (code points) per unit."""
        return self._non_ascii[1]

    @cached_property
    def byte_lengths(self) -> np.ndarray:
        return np.diff(self.buffer[1])

    @cached_property
    def _ids(self) -> tuple[np.ndarray, np.ndarray]:
        found = exact_ids(*self.buffer, self.doc_bounds)
        if found is None:  # two different values share a 64-bit hash: Arrow's hash table decides
            ids = _np(pc.dictionary_encode(self.values).indices, np.int64)
            return ids, np.bincount(ids)[ids] > 1
        return found

    @property
    def ids(self) -> np.ndarray:
        """An id per distinct value of each document (equal strings of one document, equal ids;
        the same string in two documents may get two), small non-negative integers (see
        `exact_ids`)."""
        return self._ids[0]

    @property
    def recurring(self) -> np.ndarray:
        """True for each unit whose id (see `ids`) some other unit has too."""
        return self._ids[1]

    @cached_property
    def repeated(self) -> np.ndarray:
        """True for each unit that repeats an earlier unit of the same document.

        Only units sharing their byte length with another unit of the document can repeat, so
        only those are compared (by dictionary id)."""
        out = np.zeros(len(self.parent), dtype=bool)
        members, _ = repeated_groups([self.byte_lengths], self.parent)
        if not len(members):
            return out
        cand = np.sort(members)
        ids = _np(pc.dictionary_encode(self.values.take(pa.array(cand))).indices, np.int64)
        members, first = repeated_groups([ids], self.parent[cand])
        out[cand[members[~first]]] = True
        return out

    def matches(self, pattern: str) -> np.ndarray:
        return _np(pc.match_substring_regex(self.values, pattern), bool)

    def ends_with_any(self, suffixes: Iterable[str]) -> np.ndarray:
        return self._affix_match(suffixes, at_end=True)

    def starts_with_any(self, prefixes: Iterable[str]) -> np.ndarray:
        return self._affix_match(prefixes, at_end=False)

    def _affix_match(self, affixes: Iterable[str], at_end: bool) -> np.ndarray:
        """Units whose bytes end (start) with one of `affixes`. UTF-8 is self-synchronising, so a
        byte match of a whole character's encoding is a match of that character."""
        values, offsets = self.buffer
        starts, ends = offsets[:-1], offsets[1:]
        out = np.zeros(len(starts), dtype=bool)
        if not len(starts):
            return out
        edge = values[ends - 1] if at_end else values[starts]
        for affix in dict.fromkeys(affixes):
            raw = affix.encode("utf-8")
            cand = np.flatnonzero(edge == (raw[-1] if at_end else raw[0]))
            if len(raw) > 1:
                cand = cand[ends[cand] - starts[cand] >= len(raw)]
                base = (ends[cand] - len(raw)) if at_end else starts[cand]
                for k, byte in enumerate(raw):
                    hit = values[base + k] == byte
                    cand, base = cand[hit], base[hit]
            out[cand] = True
        return out


def _trimmed_units(values: pa.Array, parent: np.ndarray, n_docs: int) -> Units:
    return _nonempty_units(pc.utf8_trim_whitespace(values), parent, n_docs)


def _nonempty_units(values: pa.Array, parent: np.ndarray, n_docs: int) -> Units:
    if not pa.types.is_large_string(values.type):
        values = values.cast(pa.large_string())
    _, offsets = utf8_buffer(values)
    empty = np.flatnonzero(offsets[1:] == offsets[:-1])
    if len(empty):  # an empty unit's zero bytes: the others stay contiguous, drop its offset
        offsets = _without(offsets, empty)
        values = pa.Array.from_buffers(
            pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), values.buffers()[2]]
        )
        parent = _without(parent, empty)
    return Units(values, parent, n_docs)


def _without(array: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """`array` without the items at the sorted positions `drop` (few: copied slice by slice)."""
    if len(drop) > 64:
        return np.delete(array, drop)
    bounds = [-1, *drop.tolist(), len(array)]
    return np.concatenate([array[a + 1 : b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


class TextBatch:
    """The texts of one shard and their splits, each computed once on first use."""

    def __init__(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> None:
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.combine_chunks()
        if not isinstance(texts, pa.Array):
            texts = pa.array(list(texts), pa.string())
        self.texts: pa.Array = texts.fill_null("")
        if not pa.types.is_large_string(self.texts.type):
            self.texts = self.texts.cast(pa.large_string())
        self.n = len(self.texts)

    def per_doc(self, parent: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(parent, weights=weights, minlength=self.n).astype(np.float64)

    @cached_property
    def _bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """The texts' bytes from the first one's start, and offsets (len n + 1) into them."""
        values, offsets = utf8_buffer(self.texts)
        base = int(offsets[0])
        return values[base : int(offsets[-1])], offsets - base

    @cached_property
    def _high(self) -> np.ndarray:
        """Positions of the non-ASCII bytes of the texts."""
        return np.flatnonzero(self._bytes[0] >= 0x80)

    def count(self, substring: str) -> np.ndarray:
        """Non-overlapping occurrences of `substring` per document (as `pc.count_substring`)."""
        raw = substring.encode("utf-8")
        values, offsets = self._bytes
        borders = any(raw[:k] == raw[-k:] for k in range(1, len(raw)))
        if not raw or (borders and len(set(raw)) > 1):  # rare patterns: Arrow decides
            return _np(pc.count_substring(self.texts, substring), np.float64)
        if raw == b"\n":
            hits = self._newlines  # shared with the line and paragraph splits
        elif raw[0] >= 0x80:
            hits = self._high[values[self._high] == raw[0]]
        else:
            hits = np.flatnonzero(values == raw[0])
        docs = np.searchsorted(offsets, hits, side="right") - 1
        for k, byte in enumerate(raw[1:], 1):
            ok = (hits + k < offsets[docs + 1]) & (values.take(hits + k, mode="clip") == byte)
            hits, docs = hits[ok], docs[ok]
        if not borders:  # occurrences of a pattern without borders never overlap
            return self.per_doc(docs)
        # `raw` is one byte repeated k times: a run of that byte holds floor(run length / k).
        run_start = np.ones(len(hits), dtype=bool)
        run_start[1:] = (hits[1:] != hits[:-1] + 1) | (docs[1:] != docs[:-1])
        firsts = np.flatnonzero(run_start)
        run_len = np.diff(np.append(firsts, len(hits))) + len(raw) - 1
        return self.per_doc(docs[firsts], run_len // len(raw))

    def contains(self, substring: str) -> np.ndarray:
        return self.count(substring) > 0

    @cached_property
    def sentences(self) -> np.ndarray:
        """Matches of SENTENCE_END per document, counted on the bytes (see `sentence_ends`)."""
        values, offsets = self._bytes
        counts, unsure = sentence_ends(values, offsets)
        if len(unsure):
            counts[unsure] = _np(pc.count_substring_regex(self.texts.take(pa.array(unsure)), SENTENCE_END), np.float64)
        return counts

    @cached_property
    def words(self) -> Units:
        """Whitespace-separated words, as `str.split()`: maximal runs of bytes other than ASCII
        whitespace (tab, newline, vertical tab, form feed, carriage return, space) and the other
        whitespace characters (U+001C..U+001F, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028,
        U+2029, U+202F, U+205F, U+3000), inside one text.

        Words hold every non-whitespace byte, in order, so their bytes are the texts' bytes with
        the whitespace left out (one filter) and their offsets the running sum of their lengths:
        no split into a list array, no string copied one by one."""
        values, offsets = self._bytes
        high = self._high
        leads = values[high]
        space = _ascii_space(values)
        suspects = np.concatenate(
            [np.flatnonzero((values - np.uint8(0x1C)) < np.uint8(4)), high[(leads == 0xC2) | ((leads - np.uint8(0xE1)) < 3)]]
        )
        if len(suspects):
            spaces = [suspects[values[suspects] < 0x80]]
            for size in (2, 3):
                found = find_sequences(values, [c.encode() for c in EXTRA_WHITESPACE if len(c.encode()) == size], suspects)
                spaces += [found + k for k in range(size)]
            space[np.concatenate(spaces)] = True
        inside = ~space
        # A word starts at a non-space byte after a space or at a text's start, and ends after a
        # non-space byte before a space or at a text's end.
        first = inside.copy()
        first[1:] &= space[:-1]
        last = inside.copy()
        last[:-1] &= space[1:]
        text_starts = offsets[:-1][offsets[:-1] < offsets[1:]]  # of non-empty texts
        first[text_starts] = inside[text_starts]
        text_ends = offsets[1:][offsets[1:] > offsets[:-1]] - 1
        last[text_ends] = inside[text_ends]
        starts = np.flatnonzero(first)
        lengths = np.flatnonzero(last) + 1 - starts
        word_offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=word_offsets[1:])
        word_bytes = _compress(values, inside)
        bounds = np.searchsorted(starts, offsets)
        parent = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(bounds))
        words = pa.Array.from_buffers(
            pa.large_string(), len(starts), [None, pa.py_buffer(word_offsets), pa.py_buffer(word_bytes)]
        )
        return Units(words, parent, self.n)

    @cached_property
    def word_count(self) -> np.ndarray:
        return self.words.per_doc()

    @cached_property
    def _word_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """First and last byte of every word."""
        values, offsets = self.words.buffer
        return values[offsets[:-1]], values[offsets[1:] - 1]

    @cached_property
    def _word_flags(self) -> tuple[np.ndarray, np.ndarray]:
        """Per word: holds a character outside `\\p{P}|\\p{S}`; holds a letter (`\\pL`).

        Most words answer both by their first character (a letter); only the others are looked at
        byte by byte."""
        values, offsets = self.words.buffer
        starts, ends = offsets[:-1], offsets[1:]
        first, _ = self._word_edges
        real, alpha = _char_flags(values, starts, first)
        todo = np.flatnonzero(~(real & alpha) & (ends - starts > 1))
        if len(todo):
            sub, sub_offsets = gather_spans(values, starts[todo], ends[todo])
            sub_real, sub_alpha = _char_flags(sub, np.arange(len(sub)), sub)
            real[todo] = _any_in_spans(sub_real, sub_offsets[:-1], sub_offsets[1:])
            alpha[todo] = _any_in_spans(sub_alpha, sub_offsets[:-1], sub_offsets[1:])
        return real, alpha

    @property
    def real_words(self) -> np.ndarray:
        """Words holding at least one character that is not punctuation or a symbol."""
        return self._word_flags[0]

    @property
    def alpha_words(self) -> np.ndarray:
        """Words holding at least one letter."""
        return self._word_flags[1]

    @cached_property
    def normalized_words(self) -> pa.Array:
        """Words lowercased with surrounding punctuation trimmed (for word lists)."""
        return pc.utf8_trim(pc.utf8_lower(self.words.values), TRIM_PUNCT)

    def normalized_word_in(self, word_list: Sequence[str]) -> np.ndarray:
        """Per word: its normalised form (see `normalized_words`) is one of `word_list`.

        ASCII words are trimmed by moving their ends past punctuation bytes and compared as one
        uint64 (lowercased bytes, length in the top byte) with the list's ASCII words of up to
        PACKED_MAX bytes; other words go through Arrow's lowercase, trim and `is_in`."""
        wanted = set(word_list)
        values, offsets = self.words.buffer
        n_words = len(offsets) - 1
        out = np.zeros(n_words, dtype=bool)
        if not wanted or not n_words:
            return out
        starts, ends = offsets[:-1], offsets[1:]
        slow = self.words.non_ascii.copy()
        slow[np.searchsorted(starts, len(values) - 7) :] = True  # the uint64 view ends 7 bytes early
        first, last = self._word_edges
        punct_edge = _ascii_punct(first) | _ascii_punct(last)
        edged = np.flatnonzero(punct_edge & ~slow)
        start, end = starts[edged], ends[edged]
        for forward in (True, False):
            active = np.flatnonzero(_ascii_punct(values[start if forward else end - 1]) & (start < end))
            for _ in range(TRIM_ROUNDS):
                if not len(active):
                    break
                if forward:
                    start[active] += 1
                else:
                    end[active] -= 1
                active = active[start[active] < end[active]]
                active = active[_ascii_punct(values[start[active] if forward else end[active] - 1])]
            slow[edged[active]] = True  # very long punctuation runs: Arrow trims those
        lengths = np.diff(offsets)
        long_lengths = [len(w) for w in wanted if w.isascii() and len(w) > PACKED_MAX]
        if long_lengths:  # ASCII words of the list too long to pack: Arrow compares those
            slow[np.isin(lengths, long_lengths) & ~punct_edge] = True
            slow[edged[np.isin(end - start, long_lengths)]] = True
        packed = [w for w in wanted if w.isascii() and len(w) <= PACKED_MAX]
        if packed:
            size_ok = np.zeros(PACKED_MAX + 2, dtype=bool)
            size_ok[[len(w) for w in packed]] = True
            # A word can match only if its first byte, ASCII-lowercased, starts a listed word:
            # `| 0x20` is a necessary condition (lowercasing moves only A-Z, by 0x20), so the
            # exact comparison below runs on these candidates alone.
            first_ok = np.zeros(256, dtype=bool)
            first_ok[[ord(w[0]) | 0x20 for w in packed]] = True
            first_ok = first_ok[np.arange(256) | 0x20]
            as_u64 = np.ndarray((max(len(values) - 7, 0),), dtype="<u8", buffer=values, strides=(1,))
            letters_only = all(w.isalpha() and w.islower() for w in packed)
            wanted_keys = np.array([int.from_bytes(w.encode(), "little") | (len(w) << 56) for w in packed], np.uint64)
            plain = np.flatnonzero(first_ok[first] & ~(slow | punct_edge))
            plain = plain[size_ok[np.minimum(lengths[plain], PACKED_MAX + 1)]]
            # A word of punctuation only is trimmed to nothing (start == end, maybe the buffer's
            # end): it matches no listed word, and its first byte is not read.
            probe = values[np.minimum(start, max(len(values) - 1, 0))]
            trimmed = np.flatnonzero(first_ok[probe] & ~slow[edged] & (start < end))
            trimmed = trimmed[size_ok[np.minimum(end[trimmed] - start[trimmed], PACKED_MAX + 1)]]
            for sel, at, size in (
                (plain, starts[plain], lengths[plain]),
                (edged[trimmed], start[trimmed], (end - start)[trimmed]),
            ):
                keys = as_u64[at]
                if letters_only:
                    keys |= np.uint64(0x2020202020202020)  # exact for [a-z] words: only A-Z map onto a-z
                else:
                    keys = _ascii_lower_u64(keys)
                keys &= _LENGTH_MASKS[size]
                keys |= size.astype(np.uint64) << np.uint64(56)
                out[sel] = _is_in_u64(keys, wanted_keys)
        rest = np.flatnonzero(slow)
        if len(rest):
            words = self.words.values.take(pa.array(rest))
            normal = pc.utf8_trim(pc.utf8_lower(words), TRIM_PUNCT)
            out[rest] = _np(pc.is_in(normal, value_set=pa.array(sorted(wanted), pa.string())), bool)
        return out

    @cached_property
    def _newlines(self) -> np.ndarray:
        """Byte positions of the newlines of the texts."""
        return np.flatnonzero(self._bytes[0] == 0x0A)

    @cached_property
    def lines(self) -> Units:
        """The texts split on newlines, stripped, empty lines dropped. Each line is cut out of the
        texts' bytes with its newline (stripped anyway), so nothing is copied before the strip."""
        return self._pieces(self._newlines + 1)

    @cached_property
    def line_count(self) -> np.ndarray:
        return self.lines.per_doc()

    @cached_property
    def paragraphs(self) -> Units:
        """The texts split on `\\n\\s*\\n` (RE2: \\s is tab, newline, form feed, carriage return,
        space), stripped, empty ones dropped. A match runs from a newline to the last newline of
        the whitespace after it: a maximal chain of newlines each separated from the next by
        those whitespace bytes only. A paragraph is cut from one chain's end to the next chain's
        end (its trailing separator is whitespace, stripped with the rest)."""
        values, offsets = self._bytes
        nl = self._newlines
        if len(nl) < 2:
            return self._pieces(np.zeros(0, np.int64))
        doc = np.searchsorted(offsets, nl, side="right") - 1
        pairs = np.flatnonzero(doc[1:] == doc[:-1])  # newline i and i + 1 in the same text
        pos, stop = nl[pairs] + 1, nl[pairs + 1]
        linked = np.zeros(len(nl), dtype=bool)  # newline i is blank-linked to newline i + 1
        active = np.arange(len(pairs))
        for _ in range(TRIM_ROUNDS):
            done = pos[active] == stop[active]
            linked[pairs[active[done]]] = True
            active = active[~done]
            if not len(active):
                break
            b = values[pos[active]]
            active = active[(b == 0x20) | (b == 0x09) | (b == 0x0C) | (b == 0x0D)]
            pos[active] += 1
        if len(active):  # long whitespace runs between newlines: look at every byte
            gap, gap_offsets = gather_spans(values, pos[active], stop[active])
            other = ~((gap == 0x20) | (gap == 0x09) | (gap == 0x0C) | (gap == 0x0D))
            nonempty = gap_offsets[1:] > gap_offsets[:-1]
            blank = np.ones(len(active), dtype=bool)
            blank[nonempty] = ~_any_in_spans(other, gap_offsets[:-1][nonempty], gap_offsets[1:][nonempty])
            linked[pairs[active[blank]]] = True
        chain_end = np.flatnonzero(linked[:-1] & ~linked[1:]) + 1  # the last newline of a chain
        return self._pieces(nl[chain_end] + 1)

    def _pieces(self, cuts: np.ndarray) -> Units:
        """Units cut out of the texts' bytes at the sorted positions `cuts` and at each text's
        start (a piece runs to the next cut or start), whitespace-trimmed, empty ones dropped."""
        values, offsets = self._bytes
        total = len(values)
        starts = np.sort(np.concatenate([offsets[:-1], cuts]))
        starts = starts[starts < total]
        if len(starts) > 1:
            starts = starts[np.append(True, starts[1:] != starts[:-1])]
        piece_offsets = np.append(starts, total).astype(np.int64)
        pieces = pa.Array.from_buffers(
            pa.large_string(), len(starts), [None, pa.py_buffer(piece_offsets), pa.py_buffer(values)]
        )
        parent = np.searchsorted(offsets, starts, side="right") - 1
        return _trimmed_units(pieces, parent, self.n)

    def repeated_fractions(self, units: Units) -> tuple[np.ndarray, np.ndarray]:
        """Per document: fraction of units repeating an earlier one, and of their characters."""
        total = units.per_doc()
        chars = units.per_doc(units.lengths)
        rep = units.repeated
        rep_count = units.per_doc(rep)
        rep_chars = units.per_doc(np.where(rep, units.lengths, 0))
        return ratio(rep_count, total), ratio(rep_chars, chars)


def sentence_ends(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document, the non-overlapping matches of SENTENCE_END, `[.!?]+["'”’)\\]]*(?:\\s|$)`, and
    the documents left to Arrow (a closing run longer than CLOSER_ROUNDS characters).

    A match ends every maximal run of `.!?` whose following run of closing characters is followed by
    ASCII whitespace (RE2's \\s: tab, newline, form feed, carriage return, space) or the text's end:
    starting inside the run or ending the closers early leaves a `.!?` or closing character where
    the regular expression needs whitespace, so nothing else can match."""
    n = len(offsets) - 1
    counts = np.zeros(n)
    marks = np.flatnonzero((values == 0x2E) | (values == 0x21) | (values == 0x3F))
    if not len(marks):
        return counts, np.zeros(0, np.int64)
    docs = np.searchsorted(offsets, marks, side="right") - 1
    run_end = np.ones(len(marks), dtype=bool)
    run_end[:-1] = (marks[1:] != marks[:-1] + 1) | (docs[1:] != docs[:-1])
    end, docs = marks[run_end] + 1, docs[run_end]
    limit = offsets[docs + 1]
    padded = np.append(values, np.zeros(3, np.uint8))
    active = np.arange(len(end))
    for _ in range(CLOSER_ROUNDS):
        e = end[active]
        b = padded[e]
        ascii_closer = (b == 0x22) | (b == 0x27) | (b == 0x29) | (b == 0x5D)
        curly = (b == 0xE2) & (padded[e + 1] == 0x80) & ((padded[e + 2] == 0x9D) | (padded[e + 2] == 0x99))
        step = np.where(ascii_closer, 1, np.where(curly, 3, 0))
        step[e + step > limit[active]] = 0
        moving = step > 0
        end[active[moving]] += step[moving]
        active = active[moving]
        if not len(active):
            break
    b = padded[end]
    ok = (end == limit) | (b == 0x20) | ((b - np.uint8(9)) < np.uint8(2)) | ((b - np.uint8(12)) < np.uint8(2))
    counts += np.bincount(docs[ok], minlength=n)
    unsure = np.unique(docs[active])
    return counts, unsure


def _is_in_u64(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """`np.isin(keys, wanted)` for uint64 keys: one comparison per wanted key when they are few,
    else a binary search (numpy's isin sorts keys and wanted together)."""
    if len(wanted) <= 16:
        hit = np.zeros(len(keys), dtype=bool)
        for key in wanted:
            hit |= keys == key
        return hit
    table = np.unique(wanted)
    at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    hit = np.asarray(table[at] == keys, dtype=bool)
    return hit


def _ascii_lower_u64(x: np.ndarray) -> np.ndarray:
    """Lowercase the ASCII letters in each of 8 bytes packed in a uint64 (all bytes < 0x80)."""
    ge_a = x + np.uint64(0x3F3F3F3F3F3F3F3F)  # high bit of a byte set where byte >= 'A'
    gt_z = x + np.uint64(0x2525252525252525)  # ... where byte > 'Z'
    upper = ge_a & ~gt_z & np.uint64(0x8080808080808080)
    return x | (upper >> np.uint64(2))


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
    words, lines = batch.words, batch.lines
    real = batch.real_words
    n_words = words.per_doc(real)
    stops = batch.normalized_word_in(rules.stop_words)
    return {
        "words": n_words,
        "mean_word_length": ratio(words.per_doc(np.where(real, words.lengths, 0)), n_words),
        "hash_ratio": ratio(batch.count("#"), n_words),
        "ellipsis_ratio": ratio(batch.count("...") + batch.count("…"), n_words),
        "bullet_line_frac": ratio(lines.per_doc(lines.starts_with_any(BULLETS)), batch.line_count),
        "ellipsis_line_frac": ratio(lines.per_doc(lines.ends_with_any(ELLIPSES)), batch.line_count),
        "alpha_word_frac": ratio(words.per_doc(batch.alpha_words), batch.word_count),
        "stop_words": words.per_doc(stops),
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


def _bit_width(x: int) -> int:
    return max(int(x).bit_length(), 1)


def repeated_groups(
    keys: Sequence[np.ndarray], doc: np.ndarray | None = None, key_max: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Items whose key occurs more than once: their indices, grouped (groups in key order, each
    group by index), and True at each group's first (smallest) index.

    `keys` are non-negative integer arrays (one key, most significant part first; `key_max` their
    maxima if known); `doc`, non-decreasing, keeps equal keys of different documents apart (None:
    the keys already do). Key parts, document and the index inside the document are packed into
    one uint64 and sorted with numpy's fast (SIMD) sort; when they do not fit, the global index
    takes the place of (document, index inside it) and a group also ends where the document
    changes (equal keys sort by index, so a document's items are contiguous among them); beyond
    that, `np.lexsort`."""
    m = len(keys[0])
    if m < 2:
        return np.zeros(0, np.int64), np.zeros(0, dtype=bool)
    maxima = key_max if key_max is not None else [int(k.max()) for k in keys]
    widths = [_bit_width(x) for x in maxima]
    bounds = np.array([0, m], dtype=np.int64)
    if doc is not None:
        change = np.flatnonzero(doc[1:] != doc[:-1]) + 1
        bounds = np.concatenate([[0], change, [m]])
    run_lengths = np.diff(bounds)
    doc_bits = _bit_width(len(run_lengths) - 1) if doc is not None else 0
    local_bits = _bit_width(int(run_lengths.max()) - 1)
    index_bits = _bit_width(m - 1)
    if doc_bits + sum(widths) + local_bits <= 64:
        # key = doc | keys | index inside the document: (doc << s) - doc start, plus the global index
        shift = local_bits + sum(widths)
        key = np.arange(m, dtype=np.uint64)
        if doc is not None:
            offs = (np.arange(len(run_lengths), dtype=np.uint64) << np.uint64(shift)) - bounds[:-1].astype(np.uint64)
            key += np.repeat(offs, run_lengths)
        for part, width in zip(keys, widths, strict=True):
            shift -= width
            key += np.left_shift(_as_u64(part), np.uint64(shift))
        key.sort()
        group_key = key >> np.uint64(local_bits)
        link = np.flatnonzero(group_key[1:] == group_key[:-1])
        kept, first = _members(m, link)
        key = key[kept]
        local = (key & np.uint64((1 << local_bits) - 1)).view(np.int64)
        if doc is None:
            return local, first
        return bounds[(key >> np.uint64(local_bits + sum(widths))).view(np.int64)] + local, first
    elif sum(widths) + index_bits <= 64 and doc is not None:
        shift = index_bits + sum(widths)
        key = np.arange(m, dtype=np.uint64)
        for part, width in zip(keys, widths, strict=True):
            shift -= width
            key += np.left_shift(_as_u64(part), np.uint64(shift))
        key.sort()
        order = (key & np.uint64((1 << index_bits) - 1)).view(np.int64)
        key >>= np.uint64(index_bits)
        link = np.flatnonzero(key[1:] == key[:-1])
        small_doc = doc.astype(np.uint16 if doc[-1] < 1 << 16 else np.int64, copy=False)
        link = link[small_doc[order[link]] == small_doc[order[link + 1]]]
    else:
        columns = [*keys, doc] if doc is not None else list(keys)
        order = np.lexsort(columns[::-1])
        same = np.ones(m - 1, dtype=bool)
        for column in columns:
            c = column[order]
            same &= c[1:] == c[:-1]
        link = np.flatnonzero(same)
    kept, first = _members(m, link)
    return order[kept], first


def _repeated_groups_by_doc(
    keys: Sequence[np.ndarray], doc: np.ndarray, key_max: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """`repeated_groups(keys, doc, key_max)` over whole documents of about ID_CHUNK items at a
    time (the work stays in cache); groups never span documents, so they come out the same,
    grouped document by document."""
    m = len(doc)
    if m <= ID_CHUNK:
        return repeated_groups(keys, doc, key_max)
    cuts = np.searchsorted(doc, doc[np.arange(0, m, ID_CHUNK)])  # a document's first item
    cuts = np.unique(cuts)
    members, firsts = [], []
    for lo, hi in zip(cuts.tolist(), [*cuts[1:].tolist(), m], strict=True):
        found, first = repeated_groups([k[lo:hi] for k in keys], doc[lo:hi], key_max)
        members.append(found + lo)
        firsts.append(first)
    return np.concatenate(members), np.concatenate(firsts)


def _members(m: int, link: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted items in a group of two or more, given the links (item i continues item i - 1's
    group at i = link + 1), and True at each group's first item."""
    member = np.zeros(m, dtype=bool)
    member[link] = True
    member[link + 1] = True
    follows = np.zeros(m, dtype=bool)
    follows[link + 1] = True
    kept = np.flatnonzero(member)
    return kept, ~follows[kept]


def _as_u64(x: np.ndarray) -> np.ndarray:
    """Non-negative integers as uint64, without a copy for int64."""
    return x.view(np.uint64) if x.dtype == np.int64 else x.astype(np.uint64)


def ngram_char_fractions(
    ids: np.ndarray,
    lengths: np.ndarray,
    parent: np.ndarray,
    n_docs: int,
    top_sizes: Iterable[int],
    dup_sizes: Iterable[int],
    recurring: np.ndarray | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Word n-gram repetition per document, as fractions of the document's word characters.

    Returns ({n: chars of all occurrences of the most frequent repeated n-gram},
    {n: chars of words inside any occurrence, after the first, of a repeated n-gram});
    `recurring` (if known): True for each word whose id occurs more than once. n = 1 is not
    measured (single words repeat everywhere) and reads 0.

    An n-gram can repeat only where its (n-1)-gram prefix repeats, so after n=2 only the start
    positions of repeated (n-1)-grams are extended and grouped: the candidates shrink fast. Each
    repeated n-gram gets an exact dense id (its group, one document's), so n-grams are never
    confused by hashing."""
    top_sizes, dup_sizes = set(top_sizes), set(dup_sizes)
    total = len(ids)
    cum = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(lengths, out=cum[1:])
    doc_bounds = np.searchsorted(parent, np.arange(n_docs + 1))
    doc_chars = (cum[doc_bounds[1:]] - cum[doc_bounds[:-1]]).astype(np.float64)
    top = {n: np.zeros(n_docs) for n in top_sizes}
    dup = {n: np.zeros(n_docs) for n in dup_sizes}
    if total < 2:
        return top, dup
    word_max = int(ids.max())
    # n = 2 over the positions whose two words both have an id that occurs more than once (a
    # necessary condition for the pair to repeat), inside one document.
    multi = recurring if recurring is not None else np.bincount(ids)[ids] > 1
    pairs = np.flatnonzero(multi[:-1] & multi[1:] & (parent[:-1] == parent[1:]))
    members, first = _repeated_groups_by_doc([ids[pairs], ids[pairs + 1]], parent[pairs], [word_max, word_max])
    members = pairs[members]
    group = starts = limit = np.zeros(0, dtype=np.int64)
    group_max = word_max
    for n in range(2, max(top_sizes | dup_sizes, default=0) + 1):
        if n > 2:
            inside = starts + (n - 1) < limit  # the n-gram ends inside its document
            starts, group, limit = starts[inside], group[inside], limit[inside]
            if len(starts) < 2:
                break
            members, first = repeated_groups([group, ids[starts + (n - 1)]], None, [group_max, word_max])
        dense = np.cumsum(first) - 1
        rep_starts = members if n == 2 else starts[members]  # at n = 2 the items are the positions
        if n in top_sizes:
            top[n] = ratio(_top_ngram_chars(rep_starts, dense, first, cum, parent, n, n_docs), doc_chars)
        if n in dup_sizes:
            later = np.sort(rep_starts[~first])
            end = np.minimum(later + n, np.append(later[1:], total))  # the union of [s, s + n)
            dup_chars = np.bincount(parent[later], weights=cum[end] - cum[later], minlength=n_docs)
            dup[n] = ratio(dup_chars.astype(np.float64), doc_chars)
        if not len(members):
            break
        # The repeated n-grams' starts with their dense group ids, in group order. Each group
        # holds its starts by position (it is part of one group of the level before, which held
        # them so), so a group's first member stays its earliest occurrence at every level without
        # sorting the starts by position again.
        group_max = int(dense[-1])
        if n == 2:
            starts = members
            limit = doc_bounds[parent[starts] + 1]
        else:
            starts, limit = starts[members], limit[members]
        group = dense
    return top, dup


def _top_ngram_chars(
    starts: np.ndarray,
    group: np.ndarray,
    first: np.ndarray,
    cum: np.ndarray,
    parent: np.ndarray,
    n: int,
    n_docs: int,
) -> np.ndarray:
    """Characters of the most frequent repeated n-gram per document (ties: the longer n-gram)."""
    best = np.zeros(n_docs, dtype=np.int64)
    if len(starts) == 0:
        return best.astype(np.float64)
    counts = np.bincount(group).astype(np.int64)
    first_starts = starts[first]  # one per group, in group order
    chars = cum[first_starts + n] - cum[first_starts]
    score = (counts << np.int64(32)) | np.minimum(chars, 0xFFFFFFFF)
    docs = parent[first_starts]
    if len(docs) > 1 and (docs[1:] >= docs[:-1]).all():  # groups in document order (packed keys)
        head = np.flatnonzero(np.concatenate([[True], docs[1:] != docs[:-1]]))
        best[docs[head]] = np.maximum.reduceat(score, head)
    else:
        np.maximum.at(best, docs, score)
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
        words.recurring,
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
        keep &= lines.ends_with_any(C4_LINE_ENDS) & ~lines.ends_with_any(ELLIPSES)
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
    text = pc.binary_join(kept, pa.scalar("\n", pa.large_string())).cast(pa.string())
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
        bad |= batch.words.per_doc(batch.normalized_word_in(single)) > 0
    if phrases:
        pattern = r"\b(?:" + "|".join(re.escape(p) for p in phrases) + r")\b"
        bad |= _np(pc.match_substring_regex(pc.utf8_lower(batch.texts), pattern), bool)
    return {
        "lorem_ipsum": _np(pc.match_substring(batch.texts, "lorem ipsum", ignore_case=True), bool),
        "curly_bracket": batch.contains("{"),
        "bad_word": bad,
        "lines_left": cleaning.lines_left if cleaning is not None else batch.line_count,
        "sentences": batch.sentences if cleaning is None else _np(pc.count_substring_regex(texts, SENTENCE_END), np.float64),
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
            lines.per_doc(lines.ends_with_any(FINEWEB_LINE_ENDS)), batch.line_count
        ),
        "short_line_frac": ratio(lines.per_doc(short), batch.line_count),
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
