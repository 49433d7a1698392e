from __future__ import annotations

import dataclasses

import pytest

from curation import registry


@pytest.fixture
def fake_filter(monkeypatch: pytest.MonkeyPatch) -> str:
    """Swap the heuristic filter for a tiny test stage: engine tests don't depend on real rules."""
    real = registry.stage_def("heuristic-filter")
    monkeypatch.setitem(registry.by_type(), "heuristic-filter",
                        dataclasses.replace(real, impl="tests.unit.fake_stages:DropShort"))
    return "heuristic-filter"


# `--kubeconfig` for `pytest tests` too (pytest reads options only from initial conftests).
from tests.cluster.conftest import pytest_addoption  # noqa: E402,F401
