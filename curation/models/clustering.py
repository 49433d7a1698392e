"""Clustering math for semantic dedup and redundancy control (pure functions on arrays).

- spherical k-means: faiss (GPU index when faiss sees a GPU), else torch (GPU or CPU), else numpy;
- SemDeDup within one cluster: blocked pairwise cosine similarity, greedy keep by priority (a row
  goes only when it is close to a row that stays);
- density-based quotas (Abbas et al. 2024): clusters of low complexity (dense, redundant) get
  a smaller share of the keep budget; every cluster keeps at least one document.

Embeddings are float32 rows of unit length throughout.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BLOCK_ELEMENTS = 1 << 24  # similarity entries per block (64 MB of fp32)


# ---- k-means -----------------------------------------------------------------------------------


def _faiss() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def train_kmeans(x: np.ndarray, k: int, iterations: int, seed: int, device: str = "cpu") -> np.ndarray:
    """Unit-length centroids (k, d) of spherical k-means; k is capped at len(x)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    faiss = _faiss()
    if faiss is not None:
        use_gpu = device.startswith("cuda") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=iterations,
            seed=seed,
            spherical=True,
            gpu=use_gpu,
            verbose=False,
            min_points_per_centroid=1,
            max_points_per_centroid=1 << 30,
        )
        km.train(x)
        centroids = np.asarray(km.centroids, dtype=np.float32)
    else:
        centroids = _kmeans_lloyd(x, k, iterations, seed, device)
    return normalise_rows(centroids)


def _kmeans_lloyd(x: np.ndarray, k: int, iterations: int, seed: int, device: str) -> np.ndarray:
    """Spherical Lloyd iterations in torch (any device); empty clusters re-seeded from far points."""
    import torch

    gen = np.random.default_rng(seed)
    data = torch.from_numpy(x).to(device)
    centroids = data[torch.from_numpy(gen.choice(len(x), size=k, replace=False)).to(device)].clone()
    for _ in range(iterations):
        sims = data @ centroids.T
        best, labels = sims.max(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, data)
        counts = torch.bincount(labels, minlength=k)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            far = torch.argsort(best)[: len(empty)]
            sums[empty] = data[far]
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids.cpu().numpy()


def normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row: (cluster ids int32, cosine distance to it float32), computed in
    blocks of rows so memory stays at `BLOCK_ELEMENTS` similarities whatever the number of clusters."""
    n = len(x)
    labels = np.zeros(n, np.int32)
    distance = np.zeros(n, np.float32)
    if n == 0:
        return labels, distance
    block = max(1, BLOCK_ELEMENTS // max(1, len(centroids)))
    if device.startswith("cuda"):
        import torch

        cents = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(device)
        for start in range(0, n, block):
            rows = torch.from_numpy(np.ascontiguousarray(x[start : start + block], dtype=np.float32)).to(
                device
            )
            best_t, labels_t = (rows @ cents.T).max(dim=1)
            labels[start : start + block] = labels_t.cpu().numpy()
            distance[start : start + block] = 1.0 - best_t.cpu().numpy()
        return labels, distance
    for start in range(0, n, block):
        sims = np.asarray(x[start : start + block], dtype=np.float32) @ centroids.T
        best = sims.argmax(axis=1)
        labels[start : start + block] = best
        distance[start : start + block] = 1.0 - sims[np.arange(len(sims)), best]
    return labels, distance


# ---- SemDeDup ---------------------------------------------------------------------------------


class _Similarities:
    """Dot products between rows of one matrix, on the GPU when there is one."""

    def __init__(self, x: np.ndarray, device: str) -> None:
        self.x = x
        self.torch: Any = None
        if device.startswith("cuda"):
            import torch

            self.torch = torch
            self.data = torch.from_numpy(x).to(device)

    def __call__(self, rows: slice, cols: np.ndarray | slice) -> np.ndarray:
        if self.torch is None:
            return np.asarray(self.x[rows] @ self.x[cols].T)
        index = cols if isinstance(cols, slice) else self.torch.from_numpy(cols).to(self.data.device)
        out: np.ndarray = (self.data[rows] @ self.data[index].T).float().cpu().numpy()
        return out


def semantic_duplicates(
    emb: np.ndarray, priority: np.ndarray, epsilon: float, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within one cluster: which rows duplicate a kept row (cosine >= 1 - epsilon).

    Rows are visited in descending priority (ties: input order). A row is a duplicate when a row
    visited before it that is *kept* is that similar; otherwise it is kept. So the first row of
    every group survives, and each duplicate names a survivor within epsilon of it (a chain
    a ~ b ~ c where b goes does not take c with it unless c is close to a survivor itself).

    Returns (is_duplicate bool, index of the most similar kept row or -1, that cosine or NaN), all
    in the input order. Memory: blocks of `BLOCK_ELEMENTS` similarities."""
    n = len(emb)
    dup = np.zeros(n, dtype=bool)
    nearest = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    if n < 2:
        return dup, nearest, similarity
    order = np.lexsort((np.arange(n), -np.asarray(priority, dtype=np.float64)))
    sims = _Similarities(np.ascontiguousarray(emb[order], dtype=np.float32), device)
    threshold = 1.0 - epsilon - 1e-6  # fp32 dot products of identical rows may read 0.9999999
    kept = np.zeros(n, dtype=bool)  # in visiting order
    best_sim = np.full(n, -np.inf, dtype=np.float32)
    best_at = np.full(n, -1, dtype=np.int64)
    block = max(1, BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        size = stop - start
        earlier = np.flatnonzero(kept[:start])
        if len(earlier):  # survivors of earlier blocks
            s = sims(slice(start, stop), earlier)
            arg = s.argmax(axis=1)
            best_sim[start:stop] = s[np.arange(size), arg]
            best_at[start:stop] = earlier[arg]
        inner = sims(slice(start, stop), slice(start, stop))
        similar = (inner >= threshold) & np.tri(size, k=-1, dtype=bool)  # [i, j]: j visited before i
        is_dup = best_sim[start:stop] >= threshold
        is_kept = np.zeros(size, dtype=bool)
        undecided = ~is_dup
        # A row is decided once every similar row before it is: kept if none of them is kept.
        for _ in range(8):
            if not undecided.any():
                break
            has_kept = (similar & is_kept[None, :]).any(axis=1)
            waiting = (similar & undecided[None, :]).any(axis=1)
            is_dup |= undecided & has_kept
            is_kept |= undecided & ~has_kept & ~waiting
            undecided &= ~(is_dup | is_kept)
        for i in np.flatnonzero(undecided):  # long chains: settle the rest in order
            if (similar[i] & is_kept).any():
                is_dup[i] = True
            else:
                is_kept[i] = True
        kept[start:stop] = is_kept
        # Each duplicate names its most similar survivor, here or in an earlier block.
        inner_kept = np.where(similar & is_kept[None, :], inner, -np.inf)
        arg = inner_kept.argmax(axis=1)
        inner_best = inner_kept[np.arange(size), arg]
        better = inner_best > best_sim[start:stop]
        best_sim[start:stop] = np.where(better, inner_best, best_sim[start:stop])
        best_at[start:stop] = np.where(better, start + arg, best_at[start:stop])
    gone = ~kept
    dup[order[gone]] = True
    nearest[order[gone]] = order[best_at[gone]]
    similarity[order[gone]] = np.minimum(best_sim[gone], 1.0)
    return dup, nearest, similarity


def group_sizes(nearest: np.ndarray) -> np.ndarray:
    """Sizes (> 1) of duplicate groups: a kept row plus the rows whose nearest earlier row chains to it."""
    root = np.arange(len(nearest))
    parent = np.where(nearest >= 0, nearest, root)
    for _ in range(64):  # chains are short; pointer jumping converges in log steps
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    _, counts = np.unique(parent, return_counts=True)
    return counts[counts > 1]


# ---- density-based pruning ---------------------------------------------------------------------


def cluster_complexity(intra_distance: np.ndarray, centroids: np.ndarray, neighbours: int) -> np.ndarray:
    """Complexity of each cluster = mean distance of members to the centroid (intra) x mean
    distance of the centroid to its `neighbours` nearest centroids (inter), in blocks of centroids."""
    k = len(centroids)
    if k == 1:
        inter = np.ones(1)
    else:
        nn = min(neighbours, k - 1)
        inter = np.zeros(k)
        block = max(1, BLOCK_ELEMENTS // k)
        for start in range(0, k, block):
            stop = min(k, start + block)
            dist = 1.0 - centroids[start:stop] @ centroids.T
            dist[np.arange(stop - start), np.arange(start, stop)] = np.inf
            inter[start:stop] = np.partition(dist, nn - 1, axis=1)[:, :nn].mean(axis=1)
    return np.asarray(intra_distance, dtype=np.float64) * np.maximum(inter, 1e-6)


def density_quotas(
    sizes: np.ndarray, complexity: np.ndarray, keep_fraction: float, temperature: float
) -> np.ndarray:
    """Documents each cluster keeps: every non-empty cluster keeps one (its survivor: a cluster never
    loses every member), and the rest of the budget is shared by softmax(complexity / temperature),
    capped at each cluster's size, the surplus of capped clusters spread over the others
    (water-filling).

    The quotas sum to round(keep_fraction * total), or to the number of non-empty clusters when
    that is more."""
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(round(keep_fraction * sizes.sum()))
    base = (sizes > 0).astype(np.int64)
    room = sizes - base
    budget = max(0, budget - int(base.sum()))
    logits = np.asarray(complexity, dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max()) * (room > 0)
    quotas = np.zeros(len(sizes), dtype=np.float64)
    open_ = room > 0
    remaining = float(budget)
    while remaining > 1e-9 and open_.any():
        share = weights * open_
        total = share.sum()
        if total <= 0:
            share, total = open_.astype(np.float64), float(open_.sum())
        quotas += remaining * share / total
        over = quotas > room
        remaining = float((quotas - room)[over].sum())
        quotas[over] = room[over]
        open_ &= ~over & (quotas < room)
    return base + _round_preserving_sum(np.minimum(quotas, room), budget, room)


def _round_preserving_sum(values: np.ndarray, total: int, caps: np.ndarray) -> np.ndarray:
    floor = np.floor(values).astype(np.int64)
    short = total - int(floor.sum())
    if short > 0:
        room = floor < caps
        frac = np.where(room, values - floor, -1.0)
        for i in np.argsort(-frac, kind="stable"):
            if short == 0:
                break
            if floor[i] < caps[i]:
                floor[i] += 1
                short -= 1
    return floor


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Counts of clusters by size in power-of-two buckets ("1", "2-3", "4-7", ...)."""
    out: dict[str, int] = {}
    for size in np.asarray(sizes, dtype=np.int64):
        if size <= 0:
            continue
        low = 1 << (int(size).bit_length() - 1)
        key = str(low) if low == 1 else f"{low}-{2 * low - 1}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0].split("-")[0])))
