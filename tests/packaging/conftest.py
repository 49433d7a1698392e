"""Fixtures for the packaging tier: the chart, its rendering, and the tools (helm, kubectl, hadolint).

Plain tests need only the helm binary (skipped with a hint when tests/cluster/setup.sh has not run);
tests marked `cluster` reuse the control-plane fixtures of tests/cluster.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "thresher"
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

# The cluster fixtures live in tests/cluster/conftest.py; re-exported so `cluster` tests here can use
# them. (While they stay there, a session running both folders starts one control plane per folder.)
from tests.cluster.conftest import (  # noqa: E402,F401
    k8s_api,
    k8s_cluster,
    kubeconfig,
    kubectl,
    namespace,
    pvc_folder,
)

EVIDENCE: list[str] = []


def report(line: str) -> None:
    """A line for the CI log: shown in the terminal summary even when the test passes quietly."""
    EVIDENCE.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if EVIDENCE:
        terminalreporter.section("thresher packaging checks")
        for line in EVIDENCE:
            terminalreporter.write_line(line)


def load_script(name: str) -> Any:
    """Import scripts/<name>.py (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_tool(name: str) -> str | None:
    from k8s_helpers import tool

    try:
        return tool(name)
    except FileNotFoundError:
        return shutil.which(name)


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_tool("helm")
    if not path:
        pytest.skip("helm not installed: run `bash tests/cluster/setup.sh` (make cluster-binaries)")
    return path


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., list[dict[str, Any]]]:
    """`render("--set", "a=b", ...)` -> the chart's objects from `helm template` (release `thresher`)."""

    def run(*args: str, release_namespace: str = "thresher-system") -> list[dict[str, Any]]:
        cmd = [helm, "template", "thresher", str(CHART), "--namespace", release_namespace, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"helm template {' '.join(args)} failed:\n{result.stderr}")
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return run


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}
