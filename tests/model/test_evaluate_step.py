"""`spec.evaluate` end to end: a pipeline whose last step trains the proxy models on its input and
its curated output and writes `<output>/eval/` (the tiny preset, a two-step budget, on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.dataset import RankMarker
from curation.layout import RunLayout
from curation.models.sample_models import ENCODER
from tests.helpers import make_spec, run_all, write_docs
from tests.model.test_eval import texts

pytestmark = pytest.mark.model


def test_the_last_step_compares_the_input_and_the_curated_output(models_dir: Path, tmp_path: Path) -> None:
    docs = texts(150, 1)
    docs += docs[:30]  # exact duplicates for the curation to remove
    inp = write_docs(tmp_path / "in", docs, shards=2, ids=[f"d{i}" for i in range(len(docs))])
    heldout = write_docs(tmp_path / "heldout", texts(30, 3), ids=[f"h{i}" for i in range(30)])
    spec = make_spec(inp, tmp_path / "out", [{"type": "exact-dedup"}], parallelism=2,
                     models={"path": str(models_dir)},
                     evaluate={"evalSet": str(heldout), "seeds": [0, 1], "tokens": 4096, "tokenizer": ENCODER})
    run_all(spec)
    result = json.loads((tmp_path / "out" / "eval" / "eval.json").read_text())
    arms = {a["name"]: a for a in result["arms"]}
    assert arms["raw"]["documents"] == 180 and arms["curated"]["documents"] == 150
    assert arms["raw"]["tokens_trained"] == arms["curated"]["tokens_trained"] == 4096
    assert result["seeds"] == [0, 1] and result["overlap"]["overlapping_documents"] == 0
    difference = result["differences"]["heldout"]["curated - raw"]
    assert difference["n"] == 2
    assert "<svg" in (tmp_path / "out" / "eval" / "eval.html").read_text()
    stats = RankMarker(RunLayout.of(str(tmp_path / "out")).work, "evaluate.run").read(0, 1)
    assert stats["extra"]["evaluation"]["curated_minus_raw"]["mean"] == pytest.approx(difference["mean"])


def test_an_evaluation_set_that_overlaps_the_input_fails_the_step(models_dir: Path, tmp_path: Path) -> None:
    from curation.evaluate.overlap import OverlapError

    docs = texts(60, 1)
    inp = write_docs(tmp_path / "in", docs, ids=[f"d{i}" for i in range(60)])
    leaked = write_docs(tmp_path / "heldout", docs[:5], ids=[f"h{i}" for i in range(5)])
    spec = make_spec(inp, tmp_path / "out", [{"type": "exact-dedup"}], models={"path": str(models_dir)},
                     evaluate={"evalSet": str(leaked), "seeds": [0], "tokens": 4096, "tokenizer": ENCODER})
    with pytest.raises(OverlapError, match="dataset raw has 5 document.s. sharing >= 1 word 13-gram"):
        run_all(spec)


def test_a_folder_with_only_tokenizer_json_is_a_tokenizer(models_dir: Path, tmp_path: Path) -> None:
    # What a PVC prepared for output.tokenize holds: the tokenizer, no weights, no config.json.
    import shutil

    from curation.evaluate.data import load_tokenizer

    (tmp_path / "tok").mkdir()
    shutil.copy(models_dir / ENCODER / "tokenizer.json", tmp_path / "tok" / "tokenizer.json")
    tok = load_tokenizer(tmp_path, "tok")
    assert tok.vocab_size == 30522 and tok.eos_id == 102  # [SEP]
