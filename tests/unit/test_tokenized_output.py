"""`output.tokenize` end to end: token files equal tokenising the published documents in order.

Needs the `tokenizers` package (thresher[tokenize] or [models]); skipped without it. The tokenizer
is the bundled all-MiniLM-L6-v2 `tokenizer.json` (WordPiece, 30,522 ids, [SEP] = 102).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curation.cli import main
from curation.dataset import RankMarker
from curation.errors import ModelNotFoundError, SpecError
from curation.executor import run_rank
from curation.plan import data_fingerprint, plan_steps
from curation.runner import run_pipeline
from tests.helpers import make_spec, output_rows, run_all, sample_models_dir, write_docs
from tests.unit.megatron_reader import IndexedDataset

tokenizers = pytest.importorskip("tokenizers")

MODELS = sample_models_dir()
MINILM = "all-MiniLM-L6-v2"
SEP = 102
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards",
         "quietly", "hex", "jolly", "judges"]


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`n` documents of 3-60 words, every seventh a copy of an earlier one; sources a/b/c."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for i in range(n):
        if i % 7 == 6:
            texts.append(texts[i - 3])
        else:
            texts.append(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 60)))) + f" number {i}.")
    return texts, [("a", "b", "c")[i % 3] for i in range(n)]


def minilm() -> Any:
    tok = tokenizers.Tokenizer.from_file(str(MODELS / MINILM / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def expected_tokens(texts: list[str], eos: int | None = SEP, tok: Any = None) -> list[list[int]]:
    tok = tok or minilm()
    return [e.ids + ([eos] if eos is not None else []) for e in tok.encode_batch(texts, add_special_tokens=False)]


def published_texts(out: Path, text_field: str = "text") -> list[str]:
    """The published documents in output order: data shards in order, rows in order."""
    return [r[text_field] for r in output_rows(out)]


def read_megatron(out: Path) -> list[list[int]]:
    manifest = json.loads((out / "tokens" / "_manifest.json").read_text())
    docs: list[list[int]] = []
    for f in manifest["files"]:
        ds = IndexedDataset.open(out / "tokens" / f["megatron.bin"][: -len(".bin")])
        assert len(ds) == f["documents"]
        docs.extend(ds.documents())
    return docs


def read_numpy(out: Path) -> list[list[int]]:
    manifest = json.loads((out / "tokens" / "_manifest.json").read_text())
    docs: list[list[int]] = []
    for f in manifest["files"]:
        tokens = np.load(out / "tokens" / f["numpy.tokens"], mmap_mode="r")
        offsets = np.load(out / "tokens" / f["numpy.offsets"])
        docs.extend(tokens[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1))
    return docs


def tokenize_spec(tmp_path: Path, stages: list[dict[str, Any]], texts: list[str], sources: list[str] | None = None,
                  parallelism: int = 3, out: str = "out", **tokenize: Any) -> Any:
    inp = tmp_path / "in"
    if not inp.exists():
        write_docs(inp, texts, shards=4, extra={"source": sources} if sources else None)
    spec = make_spec(inp, tmp_path / out, stages, parallelism=parallelism, models={"path": str(MODELS)})
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["output"]["tokenize"] = {"tokenizer": MINILM, **tokenize}
    if sources:
        doc["input"]["sourceField"] = "source"
    return type(spec).model_validate(doc)


def test_thresher_run_writes_merged_tokens_equal_to_the_published_documents_in_curriculum_order(
        tmp_path: Path) -> None:
    texts, sources = corpus(300)
    inp = write_docs(tmp_path / "in", texts, shards=5, extra={"source": sources})
    spec = {
        "input": {"path": str(inp), "idField": "doc_id", "sourceField": "source"},
        "output": {"path": str(tmp_path / "out"),
                   "tokenize": {"tokenizer": MINILM, "fileBytes": 12_000}},  # several merged files
        "models": {"path": str(MODELS)},
        "parallelism": 3,
        "stages": [{"type": "exact-dedup"},
                   {"type": "curriculum", "params": {"signal": "length", "order": "descending", "rowsPerShard": 40}}],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--quiet", "--workers", "2"]) == 0
    out = tmp_path / "out"
    published = published_texts(out)
    assert len(published) == 300 - 42  # the planted copies went to rejected/
    expected = expected_tokens(published)
    manifest = json.loads((out / "tokens" / "_manifest.json").read_text())
    assert manifest["order"] == "curriculum" and manifest["eos_id"] == SEP
    assert len(manifest["files"]) > 1  # merged by size: a handful of files, not one per rank or shard
    assert len(manifest["files"]) < 8  # the curriculum wrote 7 output shards; 3 ranks tokenised them
    assert read_megatron(out) == expected
    assert read_numpy(out) == expected
    summary = json.loads((out / "summary.json").read_text())["tokens"]
    assert summary["documents"] == len(published) and summary["tokens"] == sum(map(len, expected))
    assert sum(r["tokens"] for r in summary["per_source"].values()) == summary["tokens"]
    rejected = [r["text"] for r in output_rows(out, "rejected")]
    removed = sum(map(len, expected_tokens(rejected)))
    dedup = next(s for s in summary["per_stage"] if s["stage"] == "exact-dedup")
    assert dedup["tokens_removed"] == removed and dedup["docs_removed"] == 42
    assert dedup["tokens_in"] == summary["tokens"] + removed and dedup["tokens_out"] == summary["tokens"]
    assert sum(r["removed_tokens"] for r in summary["per_source"].values()) == removed
    report = (out / "report.html").read_text()
    assert "Tokens per stage" in report and "Tokens per source" in report


def test_eos_follows_every_document_unless_switched_off(tmp_path: Path, fake_filter: str) -> None:
    texts, _ = corpus(40)
    with_eos = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, out="eos", formats=["megatron"])
    run_all(with_eos)
    docs = read_megatron(tmp_path / "eos")
    assert all(d[-1] == SEP and SEP not in d[:-1] for d in docs)
    plain = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, out="plain", appendEos=False, formats=["numpy"])
    run_all(plain)
    assert read_numpy(tmp_path / "plain") == [d[:-1] for d in docs]
    assert not (tmp_path / "plain" / "tokens" / "megatron").exists()


def test_explicit_eos_token_is_used(tmp_path: Path, fake_filter: str) -> None:
    texts, _ = corpus(10)
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, eosToken="[unused0]", parallelism=1)
    run_all(spec)
    eos = minilm().token_to_id("[unused0]")
    assert read_numpy(tmp_path / "out") == expected_tokens(published_texts(tmp_path / "out"), eos)


def test_several_ranks_and_pieces_give_the_same_files_as_one_rank(tmp_path: Path, fake_filter: str) -> None:
    texts, sources = corpus(120)
    files = {}
    for ranks in (1, 3):
        spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, sources, parallelism=ranks,
                             out=f"out{ranks}", fileBytes=1500)
        run_all(spec)
        root = tmp_path / f"out{ranks}" / "tokens"
        files[ranks] = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.*"))
                        if p.suffix in (".bin", ".idx", ".npy")}
    assert len(files[1]) > 4 and files[1] == files[3]


def test_empty_output_is_one_empty_file_and_the_removed_tokens_are_counted(tmp_path: Path, fake_filter: str) -> None:
    texts = ["short", "tiny", "x", "no"]  # the fake filter rejects all of them
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, parallelism=2)
    run_all(spec)
    out = tmp_path / "out"
    manifest = json.loads((out / "tokens" / "_manifest.json").read_text())
    assert [f["documents"] for f in manifest["files"]] == [0]
    assert read_megatron(out) == [] and read_numpy(out) == []
    summary = json.loads((out / "summary.json").read_text())["tokens"]
    stage = next(s for s in summary["per_stage"] if s["stage"] == "heuristic-filter")
    assert stage["tokens_removed"] == sum(map(len, expected_tokens(texts))) and stage["tokens_out"] == 0


def test_vocabulary_beyond_uint16_is_stored_as_uint32_and_megatron_int32(tmp_path: Path, fake_filter: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "models" / "big-vocab"
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    texts = [" ".join(f"w{i}" for i in (69_999, 65_536, 65_535, 7, 1000 + k)) + " w12345 w66666 w99" for k in range(8)]
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, parallelism=2, eosId=69_998)
    spec = spec.model_copy(update={
        "models": spec.models.model_copy(update={"path": str(tmp_path / "models")}),
        "output": spec.output.model_copy(update={"tokenize": spec.output.tokenize.model_copy(
            update={"tokenizer": "big-vocab"})})})
    run_all(spec)
    out = tmp_path / "out"
    expected = expected_tokens(published_texts(out), 69_998, tok)
    assert max(max(d) for d in expected) == 69_999
    manifest = json.loads((out / "tokens" / "_manifest.json").read_text())
    assert manifest["dtype"] == {"megatron": "int32", "numpy": "uint32"}
    assert IndexedDataset.open(out / "tokens" / "megatron" / "part-00000").dtype is np.int32
    assert read_megatron(out) == expected and read_numpy(out) == expected


def test_a_restarted_rank_skips_tokenised_shards_and_merged_files(tmp_path: Path, fake_filter: str) -> None:
    texts, _ = corpus(60)
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, parallelism=2, fileBytes=800)
    run_all(spec)
    out = tmp_path / "out"
    work = out / "_work"
    pieces = sorted((work / "02-finalize" / "scratch" / "tokens").glob("s*.tok"))
    merged = sorted((out / "tokens").rglob("*.bin"))
    before = {p: p.stat().st_mtime_ns for p in [*pieces, *merged]}
    for step in ("finalize.tokenize", "finalize.merge"):
        RankMarker(spec_work(spec), step).clear()  # as if the ranks were killed before their markers
        for rank in range(2):
            run_rank(spec, step, rank, 2)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert read_megatron(out) == expected_tokens(published_texts(out))


def spec_work(spec: Any) -> Any:
    from curation.layout import RunLayout

    return RunLayout.of(spec.output.path).work


def test_token_steps_are_planned_before_the_summary_only_when_asked(tmp_path: Path, fake_filter: str) -> None:
    texts, _ = corpus(5)
    plain = make_spec(write_docs(tmp_path / "in", texts), tmp_path / "out", [{"type": fake_filter}])
    assert [s.id for s in plan_steps(plain)][-4:] == ["finalize.publish", "finalize.order", "finalize.check",
                                                       "finalize.summary"]
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts)
    assert [s.id for s in plan_steps(spec)][-5:] == ["finalize.check", "finalize.tokenize", "finalize.layout",
                                                      "finalize.merge", "finalize.summary"]
    assert [s.world_size for s in plan_steps(spec)][-4:-1] == [3, 1, 3]
    # token files are data: the fingerprint changes with them, and not without them
    assert data_fingerprint(spec) != data_fingerprint(plain)
    moved = plain.model_copy(update={"output": plain.output.model_copy(update={"path": str(tmp_path / "o2")})})
    assert data_fingerprint(moved) == data_fingerprint(plain)


def test_a_missing_tokenizer_fails_before_anything_is_written(tmp_path: Path, fake_filter: str) -> None:
    texts, _ = corpus(5)
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts)
    spec = spec.model_copy(update={"output": spec.output.model_copy(update={
        "tokenize": spec.output.tokenize.model_copy(update={"tokenizer": "no-such-tokenizer"})})})
    with pytest.raises(ModelNotFoundError, match="no-such-tokenizer"):
        run_pipeline(spec, progress=False)
    assert not (tmp_path / "out").exists()


def test_eos_token_and_eos_id_together_are_refused(tmp_path: Path, fake_filter: str) -> None:
    texts, _ = corpus(5)
    with pytest.raises((SpecError, ValueError), match="eosToken or eosId"):
        tokenize_spec(tmp_path, [{"type": fake_filter}], texts, eosToken="[SEP]", eosId=3)


def test_the_tokenized_example_parses_and_plans_the_token_steps() -> None:
    from curation.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "tokenized.yaml")
    assert spec.output.tokenize is not None and spec.output.tokenize.tokenizer == MINILM
    assert (MODELS / MINILM / "tokenizer.json").exists()
    assert "finalize.merge" in [s.id for s in plan_steps(spec)]


def _token_bytes(out: Path) -> dict[str, bytes]:
    root = out / "tokens"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.suffix in (".bin", ".idx", ".npy")}


def test_a_rank_killed_mid_step_resumes_to_the_same_files(tmp_path: Path, fake_filter: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import curation.tokens.steps as token_steps
    from curation.executor import remove_temporary_files
    from curation.tokens.tokenizer import LoadedTokenizer

    texts, _ = corpus(90)
    reference = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, parallelism=1, out="ref", fileBytes=900,
                              batchDocuments=8)
    run_all(reference)
    spec = tokenize_spec(tmp_path, [{"type": fake_filter}], texts, parallelism=1, fileBytes=900, batchDocuments=8)
    calls = {"encode": 0, "merge": 0}
    real_encode, real_merge = LoadedTokenizer.encode, token_steps.merge_file

    def dying_encode(self: Any, batch: list[str]) -> Any:
        calls["encode"] += 1
        if calls["encode"] == 5:  # inside the second output shard, its pieces half written
            raise KeyboardInterrupt
        return real_encode(self, batch)

    def dying_merge(plan: Any, entry: Any, *args: Any) -> Any:
        calls["merge"] += 1
        if entry["index"] == 1:
            raise KeyboardInterrupt
        return real_merge(plan, entry, *args)

    monkeypatch.setattr(LoadedTokenizer, "encode", dying_encode)
    monkeypatch.setattr(token_steps, "merge_file", dying_merge)
    with pytest.raises(KeyboardInterrupt):
        run_all(spec)
    monkeypatch.setattr(LoadedTokenizer, "encode", real_encode)
    with pytest.raises(KeyboardInterrupt):
        run_all(spec)  # tokenize resumes; merge dies on file 1 after writing file 0
    monkeypatch.setattr(token_steps, "merge_file", real_merge)
    run_all(spec)
    remove_temporary_files(spec)
    out = tmp_path / "out"
    assert _token_bytes(out) == _token_bytes(tmp_path / "ref") and len(_token_bytes(out)) >= 8
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


def test_thresher_models_checks_the_tokenizer_a_spec_names(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A folder holding only tokenizer.json is a tokenizer (not a model: no config.json needed).
    models = tmp_path / "models"
    (models / "tok-only").mkdir(parents=True)
    (models / "tok-only" / "tokenizer.json").write_bytes((MODELS / MINILM / "tokenizer.json").read_bytes())
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "tokenized.yaml").read_text())
    doc["spec"]["output"]["tokenize"]["tokenizer"] = "tok-only"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["models", "--models", str(models), "--spec", str(spec)]) == 0
    assert "output.tokenize (tokenizer): tok-only: ok" in capsys.readouterr().out
    doc["spec"]["output"]["tokenize"]["tokenizer"] = "absent"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["models", "--models", str(models), "--spec", str(spec)]) == 2
    out, err = capsys.readouterr()
    assert "output.tokenize (tokenizer): absent: MISSING" in out
    assert "error: output.tokenize.tokenizer 'absent' not found" in err and "tokenizer.json" in err


def test_validate_describes_the_token_output(capsys: pytest.CaptureFixture) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "tokenized.yaml"
    assert main(["validate", str(example)]) == 0
    out = capsys.readouterr().out
    assert f"output.tokenize: tokenizer {MINILM}, formats megatron, numpy, EOS after each document" in out
    assert "finalize.merge" in out and "out/tokenized/tokens" in out


def test_tokenize_workers_are_spawned_not_forked(tmp_path: Path) -> None:
    # A forked child's fast tokenizer hangs once the parent has used one (preflight loads it).
    from curation.runner import _pool_context

    inp = write_docs(tmp_path / "in", ["a b c"] * 3)
    spec = make_spec(inp, tmp_path / "out", [{"type": "exact-dedup"}], models={"path": str(MODELS)},
                     output={"path": str(tmp_path / "out"), "tokenize": {"tokenizer": MINILM}})
    steps = {s.id: s for s in plan_steps(spec)}
    assert _pool_context(steps["finalize.tokenize"], spec).get_start_method() == "spawn"
    assert _pool_context(steps["exact-dedup.hash"], spec).get_start_method() == "fork"
