"""Model-tier fixtures: a models folder with the PyPI-shipped sample models, loaded once per session.

The folder lives in a session temp dir: the sample models are symlinked in and the GGUF model
is dequantised into its `.thresher-cache/` once (about 15 s on two cores), then reused.
"""

from __future__ import annotations

import importlib.util
import os

# Before anything imports huggingface_hub: the whole tier runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from curation.models.sample_models import ENCODER, GENERATOR, populate  # noqa: E402

# Without the `models` extra the tier is not collected at all (each test file is marked `model`).
if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers")):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    # One intra-op thread: on a small shared machine OpenMP threads that spin-wait for each other
    # make a forward pass ten times slower than running single-threaded.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    populate(root)
    return root


@pytest.fixture(scope="session")
def encoder(models_dir: Path) -> Any:
    from curation.models.embeddings import Encoder
    from curation.models.loading import load_model

    return Encoder(load_model(models_dir, ENCODER, "encoder"), max_tokens=128)


@pytest.fixture(scope="session")
def causal_lm(models_dir: Path) -> Any:
    from curation.models.loading import load_model

    return load_model(models_dir, GENERATOR, "causal-lm")


@pytest.fixture(scope="session")
def tiny_hf_classifier(models_dir: Path) -> str:
    """A two-label BERT sequence classifier with random weights and MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    name = "tiny-bert-classifier"
    target = models_dir / name
    if not target.exists():
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
            id2label={0: "low", 1: "high"},
            label2id={"low": 0, "high": 1},
        )
        BertForSequenceClassification(config).save_pretrained(target)
        AutoTokenizer.from_pretrained(models_dir / ENCODER, local_files_only=True).save_pretrained(target)
    return name
