"""Clustering math for semantic dedup and redundancy control (pure functions on arrays).

- spherical k-means: faiss (GPU index when faiss sees a GPU), else torch (GPU or CPU), else numpy;
- SemDeDup within one cluster: blocked pairwise cosine similarity, greedy keep by priority;
- density-based quotas (Abbas et al. 2024): clusters of low complexity (dense, redundant) get
  a smaller share of the keep budget.

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
    """Nearest centroid of each row: (cluster ids int32, cosine distance to it float32)."""
    if len(x) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    if device.startswith("cuda"):
        import torch

        sims_t = (
            torch.from_numpy(np.ascontiguousarray(x)).to(device) @ torch.from_numpy(centroids).to(device).T
        )
        best_t, labels_t = sims_t.max(dim=1)
        return labels_t.cpu().numpy().astype(np.int32), (1.0 - best_t.cpu().numpy()).astype(np.float32)
    sims = x @ centroids.T
    labels = sims.argmax(axis=1)
    best = sims[np.arange(len(x)), labels]
    return labels.astype(np.int32), (1.0 - best).astype(np.float32)


# ---- SemDeDup ---------------------------------------------------------------------------------


def semantic_duplicates(
    emb: np.ndarray, priority: np.ndarray, epsilon: float, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Within one cluster: which rows duplicate a higher-priority row (cosine >= 1 - epsilon).

    Rows are visited in descending priority; a row is a duplicate when any row before it in
    that order is that similar (SemDeDup's rule). Returns (is_duplicate bool, index of the most
    similar earlier row or -1), both in the input order."""
    n = len(emb)
    dup = np.zeros(n, dtype=bool)
    nearest = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return dup, nearest
    order = np.lexsort((np.arange(n), -np.asarray(priority, dtype=np.float64)))
    ordered = np.ascontiguousarray(emb[order], dtype=np.float32)
    block = max(1, BLOCK_ELEMENTS // n)
    threshold = 1.0 - epsilon
    use_torch = device.startswith("cuda")
    if use_torch:
        import torch

        data = torch.from_numpy(ordered).to(device)
    for start in range(1, n, block):
        stop = min(n, start + block)
        if use_torch:
            sims = (data[start:stop] @ data[:stop].T).float().cpu().numpy()
        else:
            sims = ordered[start:stop] @ ordered[:stop].T
        # only rows earlier in the order count: mask the diagonal and everything after it
        cols = np.arange(stop)
        sims[cols[None, :] >= np.arange(start, stop)[:, None]] = -np.inf
        best = sims.argmax(axis=1)
        best_sim = sims[np.arange(stop - start), best]
        hit = best_sim >= threshold - 1e-6  # fp32 dot products of identical rows may read 0.9999999
        dup[order[start:stop][hit]] = True
        nearest[order[start:stop][hit]] = order[best[hit]]
    return dup, nearest


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
    distance of the centroid to its `neighbours` nearest centroids (inter)."""
    k = len(centroids)
    if k == 1:
        inter = np.ones(1)
    else:
        dist = 1.0 - centroids @ centroids.T
        np.fill_diagonal(dist, np.inf)
        nn = min(neighbours, k - 1)
        inter = np.sort(dist, axis=1)[:, :nn].mean(axis=1)
    return np.asarray(intra_distance, dtype=np.float64) * np.maximum(inter, 1e-6)


def density_quotas(
    sizes: np.ndarray, complexity: np.ndarray, keep_fraction: float, temperature: float
) -> np.ndarray:
    """Documents each cluster keeps: budget share softmax(complexity / temperature), capped at
    the cluster's size, the surplus of capped clusters spread over the others (water-filling).

    The quotas sum to round(keep_fraction * total)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(round(keep_fraction * sizes.sum()))
    logits = np.asarray(complexity, dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max()) * (sizes > 0)
    quotas = np.zeros(len(sizes), dtype=np.float64)
    open_ = sizes > 0
    remaining = float(budget)
    while remaining > 1e-9 and open_.any():
        share = weights * open_
        total = share.sum()
        if total <= 0:
            share, total = open_.astype(np.float64), float(open_.sum())
        quotas += remaining * share / total
        over = quotas > sizes
        remaining = float((quotas - sizes)[over].sum())
        quotas[over] = sizes[over]
        open_ &= ~over & (quotas < sizes)
    return _round_preserving_sum(np.minimum(quotas, sizes), budget, sizes)


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
