from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli_models import add_parsers
from curation.errors import ModelNotFoundError
from curation.models.classifier import LinearClassifier
from tests.model.corpus import DENSE_TOPIC, PROSE, SPARSE_TOPICS, UNRELATED, keyboard_mash

pytestmark = pytest.mark.model


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="thresher")
    add_parsers(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def test_models_lists_the_location_and_checks_a_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "input: {path: in}\noutput: {path: out}\n"
        f"models: {{path: {models}}}\n"
        "stages:\n"
        "  - type: semantic-dedup\n"
        "  - type: rephrase\n    params: {model: SmolLM2-135M-Instruct.Q4_1.gguf}\n"
        "  - type: quality-score\n    params: {classifier: quality.npz, keepFraction: 0.5}\n"
    )
    with pytest.raises(ModelNotFoundError, match="quality.npz"):
        run_cli("models", "--spec", str(spec), "--populate-sample")
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2: Hugging Face BertModel" in out
    assert "SmolLM2-135M-Instruct.Q4_1.gguf: GGUF" in out
    assert "semantic-dedup (encoder): all-MiniLM-L6-v2: ok" in out
    assert "quality-score (classifier): quality.npz: MISSING" in out


def test_train_classifier_writes_a_model_and_reports_held_out_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = PROSE + SPARSE_TOPICS + UNRELATED
    bad = DENSE_TOPIC + keyboard_mash(20, seed=4)
    pq.write_table(
        pa.table({"text": good + bad, "label": ["hq"] * len(good) + ["spam"] * len(bad)}),
        tmp_path / "labelled.parquet",
    )
    code = run_cli(
        "train-classifier",
        "--input",
        str(tmp_path / "labelled.parquet"),
        "--positive",
        "hq",
        "--output",
        str(tmp_path / "models" / "quality.npz"),
        "--holdout",
        "0.25",
        "--buckets",
        "65536",
    )
    out = capsys.readouterr().out
    assert code == 0 and "held-out AUC" in out
    model = LinearClassifier.load(tmp_path / "models" / "quality.npz")
    assert model.positive_label == "hq" and model.info["holdout_auc"] > 0.8
    run_cli("models", "--models", str(tmp_path / "models"))
    assert "Thresher linear classifier, positive label 'hq'" in capsys.readouterr().out
