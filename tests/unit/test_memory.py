"""The allocator settings every step runs with (curation/memory.py)."""

from __future__ import annotations

import subprocess
import sys


def _in_fresh_process(code: str, **env: str) -> str:
    import os

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    return result.stdout.strip()


PROBE = ("from curation.memory import tune_allocators; import pyarrow as pa; "
         "a = tune_allocators(); b = tune_allocators(); print(a == b, a, pa.default_memory_pool().backend_name)")


def test_allocators_are_tuned_once_and_arrow_uses_the_system_pool() -> None:
    same, tuned, pool = _in_fresh_process(PROBE).split()
    assert same == "True"
    if sys.platform.startswith("linux") and tuned == "True":  # glibc: Arrow allocates through malloc
        assert pool == "system"


def test_the_default_allocators_can_be_kept() -> None:
    same, tuned, pool = _in_fresh_process(PROBE, THRESHER_DEFAULT_ALLOCATORS="1").split()
    assert (same, tuned) == ("True", "False") and pool != "system"
