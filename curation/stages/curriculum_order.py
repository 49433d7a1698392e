"""The curriculum's global order without a global sort: sample -> boundaries -> range-partitioned sort.

Every document gets a sort key of four uint64 words (missing flag, order-preserving signal bits,
seeded tie-break hash, document key). A bounded, deterministic sample (documents whose tie-break
hash falls below a rate) gives the bucket boundaries (equal counts by rank; exact when the sample
is the whole corpus) and the range boundaries. Each range is sorted by one reduce rank; a range's
offset is the count of documents in earlier ranges (from the map ranks' small count lists), so
positions are exact and never depend on the parallelism.
"""

from __future__ import annotations

import numpy as np

SAMPLE_DOCS = 100_000  # sample size the boundaries are computed from
SIGN = np.uint64(1 << 63)


def signal_bits(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(missing flag, uint64 whose order is the float order) of each signal value."""
    missing = np.isnan(signal)
    bits = np.where(missing, 0.0, signal).astype(np.float64).view(np.uint64)
    ordered = np.where(bits & SIGN, ~bits, bits | SIGN)
    return missing.astype(np.uint64), ordered


def sort_words(signal: np.ndarray, tiebreak: np.ndarray, keys: np.ndarray, descending: bool = False) -> np.ndarray:
    """The (n, 4) uint64 sort key: missing last, then signal (ascending or descending), tie-break, key."""
    missing, ordered = signal_bits(signal)
    if descending:
        ordered = ~ordered
    return np.stack([missing, ordered, tiebreak.astype(np.uint64), keys.astype(np.uint64)], axis=1)


def lex_order(words: np.ndarray) -> np.ndarray:
    return np.lexsort(tuple(words[:, i] for i in range(words.shape[1] - 1, -1, -1)))


def count_at_or_below(words: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """For each row of `words`, how many boundary rows are lexicographically <= it."""
    if len(boundaries) == 0 or len(words) == 0:
        return np.zeros(len(words), dtype=np.int64)
    both = np.concatenate([boundaries, words])
    flag = np.concatenate([np.zeros(len(boundaries), np.uint64), np.ones(len(words), np.uint64)])
    order = np.lexsort((flag, *(both[:, i] for i in range(both.shape[1] - 1, -1, -1))))
    is_boundary = order < len(boundaries)
    below = np.cumsum(is_boundary)
    out = np.empty(len(words), dtype=np.int64)
    docs = ~is_boundary
    out[order[docs] - len(boundaries)] = below[docs]
    return out


def sample_rate(total_docs: int) -> float:
    return min(1.0, SAMPLE_DOCS / max(1, total_docs))


def in_sample(tiebreak: np.ndarray, rate: float) -> np.ndarray:
    """Deterministic sample: independent of the shard layout and the parallelism."""
    if rate >= 1.0:
        return np.ones(len(tiebreak), dtype=bool)
    return tiebreak < np.uint64(int(rate * 2.0**64))


def quantile_boundaries(sorted_words: np.ndarray, parts: int) -> np.ndarray:
    """Rows cutting a sorted sample into `parts` equal-count parts (row ceil(n*b/parts), b=1..parts-1).

    Counting boundaries at or below a document then gives floor(rank * parts / n) on the full set."""
    n = len(sorted_words)
    if n == 0 or parts <= 1:
        return np.zeros((0, sorted_words.shape[1] if sorted_words.ndim == 2 else 4), dtype=np.uint64)
    idx = np.array([-(-n * b // parts) for b in range(1, parts)], dtype=np.int64)
    idx = np.minimum(idx, n - 1)
    return sorted_words[idx]


def interleaved_positions(bucket: np.ndarray, round_: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Position when documents are dealt one per bucket per round (empty buckets skipped):
    documents of earlier rounds, plus those of this round in earlier buckets."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ordered = np.sort(sizes)
    prefix = np.concatenate([[0], np.cumsum(ordered)])
    k = np.searchsorted(ordered, round_, side="left")  # buckets with size < round
    earlier_rounds = prefix[k] + round_ * (len(sizes) - k)
    same_round = np.zeros(len(bucket), dtype=np.int64)
    for b, size in enumerate(sizes.tolist()):
        same_round += ((bucket > b) & (size > round_)).astype(np.int64)
    return earlier_rounds + same_round
