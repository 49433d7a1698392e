from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.model

MODULES = [
    "curation.spec",
    "curation.plan",
    "curation.cli_models",
    "curation.models.loading",
    "curation.models.classifier",
    "curation.models.generation",
    "curation.stages.quality",
    "curation.stages.semantic",
    "curation.stages.redundancy",
    "curation.stages.rephrase",
]


def test_model_code_imports_without_loading_torch_transformers_or_faiss() -> None:
    code = (
        f"import sys; import {', '.join(MODULES)}; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'faiss') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
