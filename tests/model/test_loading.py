from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.errors import ModelNotFoundError, SpecError, StepError
from curation.models import loading
from curation.models.batching import next_batch, run_length_sorted
from curation.models.loading import dequantised_gguf_dir, load_model, resolve_model
from curation.models.sample_models import GENERATOR
from tests.helpers import make_spec, run_all, write_docs

pytestmark = pytest.mark.model


def test_missing_model_names_the_path_and_how_to_populate_it(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(tmp_path, "encoders/e5-small")
    message = str(err.value)
    assert str(tmp_path / "encoders" / "e5-small") in message
    assert "config.json" in message and "docs/air-gapped.md" in message


def test_model_names_must_stay_inside_the_models_location(tmp_path: Path) -> None:
    for name in ("/etc/passwd", "../outside", ""):
        with pytest.raises(SpecError):
            resolve_model(tmp_path, name)


def test_a_directory_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "half-copied").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path, "half-copied")


def test_a_stage_with_a_missing_model_fails_with_model_not_found(tmp_path: Path) -> None:
    inp = write_docs(tmp_path / "in", ["one document", "another document"], shards=1)
    stage = {"type": "semantic-dedup", "params": {"embedding": {"model": "not-there"}}}
    spec = make_spec(inp, tmp_path / "out", [stage], models={"path": str(tmp_path / "models")})
    with pytest.raises(ModelNotFoundError, match="not-there"):
        run_all(spec)


def test_gguf_is_dequantised_once_and_cached_as_safetensors(models_dir: Path, causal_lm: Any) -> None:
    cache = models_dir / ".thresher-cache" / Path(GENERATOR).stem
    assert (cache / "model.safetensors").exists() and (cache / "config.json").exists()
    assert json.loads((cache / "thresher-source.json").read_text())["file"] == GENERATOR
    assert causal_lm.path == cache
    assert dequantised_gguf_dir(models_dir, models_dir / GENERATOR) == cache  # found, not rebuilt
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())


def test_read_only_models_location_caches_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    readonly = tmp_path / "ro-models"
    readonly.mkdir()
    (readonly / "lm.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(loading, "_writable", lambda folder: not str(folder).startswith(str(readonly)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv(loading.CACHE_ENV, raising=False)

    def fake_build(gguf: Path, target: Path, fingerprint: dict[str, Any], auto_class: str) -> None:
        target.mkdir(parents=True)
        (target / "thresher-source.json").write_text(json.dumps(fingerprint))

    monkeypatch.setattr(loading, "_build_gguf_cache", fake_build)
    with caplog.at_level("WARNING"):
        cache = dequantised_gguf_dir(readonly, readonly / "lm.gguf")
    assert cache.parent == tmp_path / "user-cache" / "thresher" / "models"
    assert "not writable" in caplog.text
    assert dequantised_gguf_dir(readonly, readonly / "lm.gguf") == cache  # found again, not rebuilt
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "configured"))
    assert loading.gguf_cache_candidates(readonly, readonly / "lm.gguf")[0].parent == tmp_path / "configured"


def test_models_are_loaded_once_per_process(models_dir: Path, causal_lm: Any) -> None:
    assert load_model(models_dir, GENERATOR, "causal-lm") is causal_lm


def test_offline_mode_is_forced_before_transformers_loads(causal_lm: Any) -> None:
    import huggingface_hub.constants

    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE


def test_batches_are_cut_by_token_budget_longest_first() -> None:
    lengths = np.array([10, 100, 50, 20])
    order = np.argsort(-lengths, kind="stable")
    assert next_batch(order, 0, lengths, budget=200, max_size=None).tolist() == [1, 2]
    assert next_batch(order, 2, lengths, budget=200, max_size=None).tolist() == [3, 0]


def test_out_of_memory_halves_the_batch_and_retries() -> None:
    seen: list[int] = []

    def run(batch: np.ndarray) -> None:
        if len(batch) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(batch.tolist())

    budget = run_length_sorted([10] * 8, budget=80, run_batch=run, stage_type="test")
    assert sorted(seen) == list(range(8)) and budget == 20


def test_out_of_memory_on_one_document_is_a_clear_error() -> None:
    def run(batch: np.ndarray) -> None:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(StepError, match="single document"):
        run_length_sorted([10, 10], budget=10, run_batch=run, stage_type="test")


def test_other_errors_are_not_retried() -> None:
    def run(batch: np.ndarray) -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        run_length_sorted([10, 10], budget=100, run_batch=run, stage_type="test")


def test_missing_torch_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from curation.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(MissingDependencyError, match=r"thresher\[models\] \(CPU\) or thresher\[gpu\]"):
        loading.import_torch()
