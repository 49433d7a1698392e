"""`thresher eval` end to end with a very small Llama on CPU: equal token budgets, determinism per
seed, the eval.json schema, the plot, and likelihood scoring of multiple-choice tasks."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.cli import main
from curation.evaluate import DatasetRef, EvalConfig, evaluate, get_preset
from curation.evaluate.data import TokenFile, load_tokenizer
from curation.evaluate.tasks import ChoiceItem, score_task
from curation.evaluate.train import packed_batches
from curation.models.sample_models import ENCODER
from tests.helpers import write_docs

pytestmark = pytest.mark.model

WORDS = ["the", "model", "reads", "documents", "about", "rivers", "mountains", "forests", "and", "oceans", "while", "the", "curator", "removes", "duplicates", "junk", "and", "boilerplate", "from", "every", "shard", "of", "the", "corpus"]
MICRO = dict(hidden=32, layers=1, heads=2, intermediate=64, seq_len=32, batch=4, micro_batch=4, tokens=4 * 32 * 6,
             eval_points=3, eval_tokens=256)


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + f" number {seed}-{i}." for i in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaldata")
    return {
        "big": write_docs(root / "big", texts(120, 1), ids=[f"b{i}" for i in range(120)]),
        "small": write_docs(root / "small", texts(6, 2), ids=[f"s{i}" for i in range(6)]),
        "heldout": write_docs(root / "heldout", texts(12, 3), ids=[f"h{i}" for i in range(12)]),
    }


def config(data: dict[str, Path], models_dir: Path, out: Path, seeds: list[int], **kw: Any) -> EvalConfig:
    return EvalConfig(
        arms=[DatasetRef("big", str(data["big"]), id_field="doc_id"), DatasetRef("small", str(data["small"]), id_field="doc_id")],
        eval_sets=[DatasetRef("heldout", str(data["heldout"]), id_field="doc_id")],
        out=out, models=models_dir, preset=get_preset("tiny").with_overrides(**MICRO), seeds=seeds,
        tokenizer=ENCODER, threads=1, **kw)


@pytest.fixture(scope="module")
def result(data: dict[str, Path], models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    task = tmp_path_factory.mktemp("task") / "rivers.jsonl"
    task.write_text("\n".join(json.dumps(t) for t in [
        {"context": "the model reads documents about", "choices": ["rivers", "zebra quantum"], "answer": 0},
        {"context": "the curator removes", "choices": ["helicopter", "duplicates"], "answer": 1},
    ]) + "\n")
    return evaluate(config(data, models_dir, tmp_path_factory.mktemp("eval"), [0, 1], tasks=[task]))


def strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(token)

    return json.loads(path.read_text(), parse_constant=refuse)


def test_every_arm_trains_on_exactly_the_budget_and_epochs_are_reported(result: Any) -> None:
    data = result.data
    budget = data["preset"]["budget_tokens"]
    assert budget == 4 * 32 * 6
    assert {r["tokens_trained"] for r in data["runs"]} == {budget}
    assert len(data["runs"]) == 4  # 2 arms x 2 seeds
    arms = {a["name"]: a for a in data["arms"]}
    assert arms["small"]["tokens"] < budget < arms["big"]["tokens"]
    assert arms["small"]["epochs"] == pytest.approx(budget / arms["small"]["tokens"]) and arms["small"]["epochs"] > 1
    assert [p["tokens"] for p in data["runs"][0]["curve"]] == [256, 512, 768]


def test_eval_json_schema(result: Any) -> None:
    data = strict_json(result.json_path)
    assert data["schema_version"] == 1
    for key in ("preset", "model", "cost_estimate", "tokenizer", "device", "seeds", "baseline", "arms", "eval_sets",
                "overlap", "summary", "differences", "tasks", "runs", "wall_seconds"):
        assert key in data, key
    assert data["baseline"] == "big" and data["tokenizer"]["eos"] == "[SEP]"
    s = data["summary"]["heldout"]["small"]
    assert s["n"] == 2 and len(s["values"]) == 2 and s["perplexity"] > 1
    d = data["differences"]["heldout"]["small - big"]
    assert d["method"].startswith("paired over seeds") and len(d["ci95"]) == 2 and d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert data["overlap"]["ngram"] == 13 and data["overlap"]["checked_documents"] == {"big": 120, "small": 6}
    assert set(data["tasks"]["rivers"]["big"]) >= {"acc", "acc_norm", "correct_logprob_per_byte", "items"}
    assert not (result.json_path.parent / "_tokens").exists()


def test_same_seed_gives_the_same_losses(result: Any, data: dict[str, Path], models_dir: Path, tmp_path: Path) -> None:
    again = evaluate(config(data, models_dir, tmp_path, [1]))
    first = [r for r in result.data["runs"] if r["seed"] == 1]
    assert [r["curve"] for r in again.data["runs"]] == [[{k: v for k, v in p.items()} for p in r["curve"]] for r in first]
    seed0 = [r["final_loss"] for r in result.data["runs"] if r["seed"] == 0]
    assert seed0 != [r["final_loss"] for r in first]


def test_page_plots_one_curve_per_arm(result: Any) -> None:
    page = result.html_path.read_text()
    assert page.count("<svg") == 1 and page.count("class='curve'") == 2
    assert "data-arm='big'" in page and "data-arm='small'" in page
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


class Favouring:
    """A stand-in causal LM whose next-token distribution puts its mass on a few tokens."""

    def __init__(self, favoured: list[int], vocab: int) -> None:
        import torch

        self.bias = torch.zeros(vocab)
        self.bias[favoured] = 8.0

    def eval(self) -> None: ...

    def train(self) -> None: ...

    def __call__(self, input_ids: Any) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.bias.expand(*input_ids.shape, -1).clone())


def test_multiple_choice_is_scored_by_likelihood(models_dir: Path) -> None:
    tok = load_tokenizer(models_dir, ENCODER)
    favoured = tok.encode(["rivers duplicates"])[0]
    items = [ChoiceItem("the model reads about", ["rivers", "zebra"], 0),
             ChoiceItem("the curator removes", ["helicopter", "duplicates"], 1),
             ChoiceItem("pick one", ["zebra", "rivers", "helicopter"], 0)]
    scores = score_task(Favouring(favoured, tok.vocab_size), tok, items, 64, "cpu")
    assert scores["items"] == 3 and scores["acc"] == pytest.approx(2 / 3) and scores["acc_norm"] == pytest.approx(2 / 3)
    assert scores["chance"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)


def test_packing_concatenates_documents_with_eos_in_a_seeded_order() -> None:
    docs = [np.array([1, 2, 0]), np.array([3, 0]), np.array([4, 5, 6, 0])]
    offsets = np.cumsum([0] + [len(d) for d in docs])
    tf = TokenFile(np.concatenate(docs), offsets)
    stream = packed_batches(tf, seq_len=3, micro_batch=1, seed=4)
    got = np.concatenate([next(stream).ravel() for _ in range(6)])  # two epochs of 9 tokens
    order0 = np.random.default_rng([4, 0]).permutation(3)
    order1 = np.random.default_rng([4, 1]).permutation(3)
    assert got.tolist() == np.concatenate([docs[i] for i in [*order0, *order1]]).tolist()


def test_cli_runs_and_refuses_a_task_file_that_is_not_there(data: dict[str, Path], models_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    base = ["eval", "--dataset", f"big={data['big']}", "--dataset", f"small={data['small']}", "--eval-set",
            f"heldout={data['heldout']}", "--id-field", "doc_id", "--models", str(models_dir), "--threads", "1",
            "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*base, "--task", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: task") and len(err.splitlines()) == 1
    assert main([*base, "--tokens", "2048", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "heldout: small - big = " in out and (tmp_path / "o" / "eval.html").exists()
