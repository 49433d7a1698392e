from __future__ import annotations

import pytest

from curation import stages


@pytest.fixture
def fake_filter(monkeypatch: pytest.MonkeyPatch) -> str:
    """Swap the heuristic filter for a tiny test stage: engine tests don't depend on real rules."""
    monkeypatch.setitem(stages.REGISTRY, "heuristic-filter", "tests.unit.fake_stages:DropShort")
    return "heuristic-filter"


# `--kubeconfig` for `pytest tests` too (pytest reads options only from initial conftests).
from tests.cluster.conftest import pytest_addoption  # noqa: E402,F401
