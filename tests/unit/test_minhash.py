"""MinHash deduplication: the vectorised math against slow references, LSH statistics, and the stage."""

from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.dataset import RankMarker
from curation.errors import StepError
from curation.executor import run_rank
from curation.layout import RunLayout
from curation.params.dedup import MinHashParams
from curation.plan import plan_steps
from curation.stages import minhash_math as mm
from curation.stages.minhash import bucket_edges
from tests.helpers import make_spec, output_rows, run_all, write_docs

MASK64 = (1 << 64) - 1


# ---- a slow, obviously-correct reference of the signature ---------------------------------------


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & MASK64
    return h ^ (h >> 33)


def _is_separator(ch: str, lowercase: bool) -> bool:
    if ch in "\t\n\x0b\x0c\r " or unicodedata.category(ch).startswith("Z"):
        return True
    return lowercase and unicodedata.category(ch)[0] in "PS"


def slow_signature(text: str, ngram: int, num_perm: int, seed: int, lowercase: bool = True) -> list[int]:
    if lowercase:
        text = text.lower()
    words = "".join(" " if _is_separator(c, lowercase) else c for c in text).split()
    if not words:
        return [int(mm.EMPTY)] * num_perm
    grams = [words[i : i + ngram] for i in range(len(words) - ngram + 1)] if len(words) >= ngram else [words]
    word_hash = {}
    for word in words:
        h = 0
        for t, byte in enumerate(word.encode("utf-8")):
            h = (h + (byte + 1) * pow(mm.POLY_BASE, t, 1 << 64)) & MASK64
        word_hash[word] = _fmix64(h)
    keys = []
    for gram in grams:
        acc = sum(int(mm.SHINGLE_MULTIPLIERS[k]) * word_hash[w] for k, w in enumerate(gram)) & MASK64
        keys.append(_fmix64(acc) >> 32)
    a, b = mm.minhash_permutations(num_perm, seed)
    return [
        min(((int(ak) * x + int(bk)) & MASK64) >> 32 for x in keys)
        for ak, bk in zip(a[:, 0], b[:, 0], strict=True)
    ]


TRICKY_TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again.",
    "  Leading\tand trailing\n\nwhitespace,   with “curly quotes” — and dashes…  ",
    "Ünïcödé wörds: café, naïve; façade! (parenthesised) [bracketed] {braced}",
    "two words",
    "",
    "?!... ---",
    "non\u00a0breaking\u2003spaces and\u3000ideographic ones plus $ymbols +=<> 100%",
    "one",
]


@pytest.mark.parametrize("lowercase", [True, False])
def test_vectorised_signatures_equal_the_slow_reference(lowercase: bool) -> None:
    fast = mm.signatures(pa.array(TRICKY_TEXTS), ngram=3, num_perm=16, seed=7, lowercase=lowercase)
    for text, row in zip(TRICKY_TEXTS, fast, strict=True):
        assert row.tolist() == slow_signature(text, 3, 16, 7, lowercase), text


def test_signatures_do_not_depend_on_batching_or_neighbours() -> None:
    texts = pa.array([f"doc {i} " + " ".join(f"w{j}" for j in range(i * 7)) for i in range(60)] + [""])
    whole = mm.signatures(texts, 5, 32, 1)
    tiny_batches = mm.signatures(texts, 5, 32, 1, batch_bytes=50)
    alone = np.stack([mm.signatures(texts.slice(i, 1), 5, 32, 1)[0] for i in range(len(texts))])
    assert np.array_equal(whole, tiny_batches)
    assert np.array_equal(whole, alone)


def test_short_documents_are_one_shingle_and_empty_documents_match_each_other() -> None:
    sigs = mm.signatures(pa.array(["alpha beta", "Alpha, beta!", "beta alpha", "", "  ...  "]), 5, 64, 1)
    assert np.array_equal(sigs[0], sigs[1])  # same words once normalised
    assert not np.array_equal(sigs[0], sigs[2])  # order matters inside the single shingle
    assert np.array_equal(sigs[3], sigs[4])  # nothing left after normalisation


def test_spans_longer_than_a_hash_chunk_hash_consistently() -> None:
    giant = "x" * (mm.SPAN_CHUNK + 10)
    texts = pa.array([f"a b {giant} c d e", f"a b {giant} c d e", f"z b {giant} c d e"])
    sigs = mm.signatures(texts, 5, 32, 3)
    assert np.array_equal(sigs[0], sigs[1])
    assert not np.array_equal(sigs[0], sigs[2])


def test_a_10mb_document_stays_within_bounded_memory() -> None:
    """~1.5 M words in one document: memory grows with its word count, not words x permutations."""
    code = (
        "import resource, numpy as np, pyarrow as pa\n"
        "from curation.stages import minhash_math as mm\n"
        "raw = np.random.default_rng(0).integers(91, 123, size=10 << 20, dtype=np.uint8)\n"
        "raw[raw < 97] = 32\n"
        "texts = pa.array([raw.tobytes().decode('ascii'), 'a small document'])\n"
        "del raw\n"
        "mm.signatures(texts.slice(1), 5, 112, 1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "sig = mm.signatures(texts, 5, 112, 1)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) // 1024, sig.shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    extra_mib = int(out.stdout.split()[0])
    assert extra_mib < 256, f"signatures of a 10 MB document took {extra_mib} MiB more than the text itself"


# ---- LSH statistics ----------------------------------------------------------------------------


def _shingles(words: list[str], n: int = 5) -> set[str]:
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def _pairs_with_spread_jaccard(count: int, length: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Pairs (A, B): B is A with a random contiguous block replaced by fresh words."""
    rng = random.Random(seed)
    fresh = iter(range(10**9))
    texts, jaccard = [], []
    for _ in range(count):
        a = [f"t{next(fresh)}" for _ in range(length)]
        k = rng.randint(0, length // 3)
        start = rng.randint(0, length - k)
        b = a[:start] + [f"t{next(fresh)}" for _ in range(k)] + a[start + k :]
        sa, sb = _shingles(a), _shingles(b)
        texts += [" ".join(a), " ".join(b)]
        jaccard.append(len(sa & sb) / len(sa | sb))
    return texts, np.array(jaccard)


def test_candidate_rate_per_jaccard_bin_follows_the_lsh_s_curve() -> None:
    params = MinHashParams()  # 14 bands x 8 rows
    texts, jaccard = _pairs_with_spread_jaccard(1500, 120, seed=11)
    sigs = mm.signatures(pa.array(texts), params.ngram, params.num_perm, params.seed)
    bands = mm.band_hashes(sigs, params.bands, params.rows_per_band)
    found = (bands[0::2] == bands[1::2]).any(axis=1)
    expected = np.array([params.detection_probability(j) for j in jaccard])
    report = []
    for lo in np.arange(0.3, 1.0, 0.1):
        sel = (jaccard >= lo) & (jaccard < lo + 0.1)
        if sel.sum() < 40:
            continue
        observed, theory = found[sel].mean(), expected[sel].mean()
        sigma = np.sqrt(theory * (1 - theory) / sel.sum())
        report.append((round(lo, 1), int(sel.sum()), round(observed, 3), round(theory, 3)))
        assert abs(observed - theory) <= 4 * sigma + 0.03, report
    assert len(report) >= 5, report


def test_disjoint_documents_never_share_a_bucket() -> None:
    rng = np.random.default_rng(5)
    vocab = np.char.add("v", np.arange(200_000).astype(str))
    texts = [" ".join(rng.choice(vocab, 150, replace=False).tolist()) for _ in range(2000)]
    sigs = mm.signatures(pa.array(texts), 5, 112, 1)
    bands = mm.band_hashes(sigs, 14, 8)
    member, _ = bucket_edges(bands.ravel(), np.repeat(np.arange(2000, dtype=np.uint64), 14))
    assert len(member) == 0


# ---- graph helpers -------------------------------------------------------------------------------


def _reference_components(u: list[int], v: list[int]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(u, v, strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def test_connected_components_match_a_reference_union_find() -> None:
    rng = np.random.default_rng(3)
    u = rng.integers(0, 5000, 4000).astype(np.uint64) * np.uint64(977)
    v = rng.integers(0, 5000, 4000).astype(np.uint64) * np.uint64(977)
    nodes, roots = mm.connected_components(u, v)
    ref = _reference_components(u.tolist(), v.tolist())
    assert dict(zip(nodes.tolist(), roots.tolist(), strict=True)) == ref


def test_survivors_keep_the_longest_then_the_lowest_key() -> None:
    nodes = np.array([1, 2, 3, 7, 8], dtype=np.uint64)
    roots = np.array([1, 1, 1, 7, 7], dtype=np.uint64)
    assert mm.survivors(nodes, roots, None).tolist() == [1, 1, 1, 7, 7]
    lengths = np.array([10, 30, 30, 5, 5])
    assert mm.survivors(nodes, roots, lengths).tolist() == [2, 2, 2, 7, 7]


def test_cluster_size_histogram_is_small_and_keyed_by_integers() -> None:
    hist = mm.size_histogram(np.array([1, 2, 2, 3, 17, 40, 1000]))
    assert hist == {"2": 2, "3": 1, "16": 1, "32": 1, "512": 1}


# ---- the stage, end to end ------------------------------------------------------------------------


def _corpus(seed: int = 0) -> tuple[list[str], list[tuple[int, int]], list[int]]:
    """Originals, near copies (~0.9 Jaccard: one word changed in ~100) and unrelated documents."""
    rng = random.Random(seed)
    vocab = [
        f"{rng.choice('bcdfghklmnprst')}{rng.choice('aeiou')}{rng.choice('nrst')}{i}" for i in range(3000)
    ]
    texts: list[str] = []
    pairs: list[tuple[int, int]] = []
    for _ in range(30):
        words = [rng.choice(vocab) for _ in range(200)]
        copy = list(words)
        copy[rng.randrange(200)] = "CHANGED"
        texts.append(" ".join(words).capitalize() + ".")
        pairs.append((len(texts) - 1, len(texts)))
        texts.append(" ".join(copy) + "!")
    unrelated = list(range(len(texts), len(texts) + 40))
    texts += [" ".join(rng.choice(vocab) for _ in range(150)) for _ in unrelated]
    order = list(range(len(texts)))
    rng.shuffle(order)
    position = {old: new for new, old in enumerate(order)}
    shuffled = [texts[i] for i in order]
    return shuffled, [(position[a], position[b]) for a, b in pairs], [position[u] for u in unrelated]


def _run(tmp: Path, texts: list[str], parallelism: int = 2, **params: object) -> tuple[Path, dict]:
    inp = write_docs(tmp / "in", texts, shards=min(5, len(texts)))
    spec = make_spec(inp, tmp / "out", [{"type": "minhash-dedup", "params": params}], parallelism=parallelism)
    return tmp / "out", run_all(spec)


def test_minhash_finds_near_duplicates_above_threshold_and_keeps_unrelated(tmp_path: Path) -> None:
    texts, pairs, unrelated = _corpus()
    out, summary = _run(tmp_path, texts)
    kept = {r["doc_id"] for r in output_rows(out)}
    rejected = {r["doc_id"]: r for r in output_rows(out, "rejected")}
    for a, b in pairs:
        ida, idb = f"d{a:05d}", f"d{b:05d}"
        assert (ida in kept) != (idb in kept), "exactly one of each near-duplicate pair survives"
        loser = idb if ida in kept else ida
        assert rejected[loser]["reason"] == "near-duplicate"
        assert rejected[loser]["dup_of"] == (ida if ida in kept else idb)
        first = min((a, b), key=lambda i: (i % 5, i // 5))  # write_docs deals docs round-robin to 5 shards
        assert f"d{first:05d}" in kept  # keep: first = lowest (shard, row)
    assert {f"d{u:05d}" for u in unrelated} <= kept
    stage = summary["stages"][1]
    assert stage["docs_in"] == stage["docs_out"] + sum(stage["removed"].values()) == len(texts)
    assert stage["removed"] == {"near-duplicate": 30}
    assert stage["extra"]["cluster_sizes"] == {"2": 30}
    assert set(output_rows(out)[0]) == {"doc_id", "text"}  # kept rows carry no new column


def test_keep_longest_keeps_the_longer_document(tmp_path: Path) -> None:
    base = " ".join(f"word{i}" for i in range(300))
    texts = [base, base + " tail", "something else entirely different here now"]
    out, _ = _run(tmp_path, texts, keep="longest")
    assert {r["doc_id"] for r in output_rows(out)} == {"d00001", "d00002"}


def test_verify_threshold_drops_candidates_whose_signatures_disagree(tmp_path: Path) -> None:
    # Variants of one text at Jaccard ~0.6 collide in a band ~20% of the time (1-(1-0.6^8)^14);
    # verification at 0.8 must drop those edges and keep the true near-copy (Jaccard ~0.99).
    rng = random.Random(4)
    words = [f"w{rng.randrange(10**6)}" for _ in range(400)]
    texts = [" ".join(words), " ".join(words[:-1])]
    for v in range(40):
        variant = list(words)
        for i in range(v % 16, 400, 16):
            variant[i] = f"x{v}"
        texts.append(" ".join(variant))
    _, loose = _run(tmp_path / "loose", texts)
    out, strict = _run(tmp_path / "strict", texts, verifyThreshold=0.8)
    assert loose["stages"][1]["removed"]["near-duplicate"] > 1
    assert strict["stages"][1]["removed"] == {"near-duplicate": 1}
    assert strict["stages"][1]["extra"]["pairs_failed_verification"] > 0
    assert "d00000" in {r["doc_id"] for r in output_rows(out)}


@pytest.mark.parametrize("parallelism", [2, 3])
def test_results_do_not_depend_on_parallelism(tmp_path: Path, parallelism: int) -> None:
    texts, _, _ = _corpus(seed=1)
    one, _ = _run(tmp_path / "one", texts, parallelism=1)
    many, _ = _run(tmp_path / "many", texts, parallelism=parallelism)
    for sub in ("data", "rejected"):
        assert sorted(map(str, output_rows(one, sub))) == sorted(map(str, output_rows(many, sub)))


def _parquet_contents(root: Path) -> dict[str, list]:
    return {
        str(p.relative_to(root)): pq.read_table(p).to_pylist()
        for p in sorted(root.rglob("*.parquet"))
        if not p.name.startswith(".")
    }


def test_rerunning_a_finished_rank_is_idempotent(tmp_path: Path) -> None:
    texts, _, _ = _corpus(seed=2)
    out, _ = _run(tmp_path, texts)
    before = _parquet_contents(out / "_work")
    spec = make_spec(tmp_path / "in", out, [{"type": "minhash-dedup"}], parallelism=2)
    layout = RunLayout.of(str(out))
    for step in plan_steps(spec)[1:-1]:
        RankMarker(layout.work, step.id).clear()
        scratch = Path(layout.stage_scratch(step.index, step.stage).path)
        for done in (scratch / "_shard_stats").rglob("*.json"):
            done.unlink()
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
    assert _parquet_contents(out / "_work") == before


def _simulate_kill(scratch: Path, step: str, victim: Path) -> None:
    """What a killed rank leaves: no rank marker (cleared by the caller), one shard not marked
    finished, a temporary file from an interrupted write, and one of its final files missing."""
    stats = scratch / "_shard_stats" / step / "s00000.json"
    if stats.exists():  # map steps with per-shard resume; partition-writing steps restart whole
        stats.unlink()
    victim.with_name(".tmp-deadbeef-" + victim.name).write_bytes(b"PAR1 half a file")
    victim.unlink()


def test_a_rank_killed_midway_reruns_to_identical_output(tmp_path: Path) -> None:
    texts, _, _ = _corpus(seed=3)
    clean, _ = _run(tmp_path / "clean", texts)
    spec = make_spec(
        tmp_path / "clean" / "in", tmp_path / "killed", [{"type": "minhash-dedup"}], parallelism=2
    )
    layout = RunLayout.of(str(tmp_path / "killed"))
    stage_root = Path(layout.stage_root(1, "minhash-dedup").path)
    for step in plan_steps(spec):
        for rank in range(step.world_size):
            run_rank(spec, step.id, rank, step.world_size)
            if rank != 0 or step.id not in ("minhash-dedup.signatures", "minhash-dedup.filter"):
                continue
            RankMarker(layout.work, step.id).clear()
            if step.step == "signatures":
                _simulate_kill(
                    stage_root / "scratch", step.step, stage_root / "scratch/signatures/p00001/r00000.parquet"
                )
                with pytest.raises(StepError, match="has not finished"):
                    run_rank(spec, "minhash-dedup.buckets", 0, 2)
            else:
                _simulate_kill(stage_root / "scratch", step.step, stage_root / "decisions/part-00000.parquet")
            run_rank(spec, step.id, rank, step.world_size)
    for sub in ("data", "rejected"):
        assert output_rows(clean, sub) == output_rows(tmp_path / "killed", sub)


def test_a_shard_emptied_by_an_earlier_stage_passes_through(tmp_path: Path) -> None:
    # Shard 1 holds only exact copies of shard 0's documents, so exact-dedup empties it.
    originals = [f"original document number {i} with several more words in it" for i in range(4)]
    inp = write_docs(tmp_path / "in", [t for o in originals for t in (o, o)], shards=2)
    spec = make_spec(
        inp, tmp_path / "out", [{"type": "exact-dedup"}, {"type": "minhash-dedup"}], parallelism=2
    )
    summary = run_all(spec)
    assert [s["docs_out"] for s in summary["stages"]] == [8, 4, 4]
    assert sorted(r["doc_id"] for r in output_rows(tmp_path / "out")) == [
        "d00000",
        "d00002",
        "d00004",
        "d00006",
    ]


@pytest.mark.parametrize("parallelism", [1, 3])
def test_survivor_ids_are_looked_up_by_partition_and_every_removal_names_one(
        tmp_path: Path, parallelism: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two id requests per partition: many names partitions, each filter rank reading only its own,
    # and the evidence equal to the one-partition run's.
    import curation.corpus as corpus_module

    texts, _, _ = _corpus(seed=3)
    base, _ = _run(tmp_path / "base", texts, parallelism=1)
    monkeypatch.setitem(corpus_module.PARTITION_ROWS, "names", 2)
    out, summary = _run(tmp_path / "split", texts, parallelism=parallelism)
    assert summary["conservation"]["holds"]
    for sub in ("data", "rejected"):
        assert sorted(map(str, output_rows(base, sub))) == sorted(map(str, output_rows(out, sub)))
    rejected = output_rows(out, "rejected")
    kept = {r["doc_id"] for r in output_rows(out)}
    assert rejected and all(r["dup_of"] in kept and r["dup_group"] for r in rejected)
    names = sorted((out / "_work").rglob("names/p*/r*"))
    requests = 2 * len(rejected)
    partitions = {p.parent.name for p in names}
    assert len(partitions) >= min(requests // 2, 5) > 1  # the ids went to many partitions
    assert len(names) <= parallelism * len(partitions)  # one file per (partition, rank) at most
    # no step before `names` holds ids: the components step's files carry keys only
    components = next((out / "_work").rglob("components"))
    for f in components.glob("*.parquet"):
        assert all(pa.types.is_unsigned_integer(t) for t in pq.read_schema(f).types), f
